"""The markdown report: the machine, one table of figures with ratios, gradients, targets."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters import ADAPTERS, version_of
from common import Stats, fmt, paired_ratios
from workloads import KillOutcome, LoggingResult, Sizes

TRACER = "tracer"


@dataclass
class Results:
    sizes: Sizes
    quick: bool
    keys: list[str]  # every tool's key, available or not, Tracer first
    skipped: dict[str, str]  # key -> why it did not run
    logging: LoggingResult | None = None
    kills: dict[str, list[KillOutcome]] = field(default_factory=dict)
    imports: dict[str, list[float]] = field(default_factory=dict)
    gradients: dict[str, list[float]] = field(default_factory=dict)
    grad_parameters: int = 0
    wall_s: float = 0.0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    versions = ", ".join(
        f"{cls.distribution} {version_of(cls.distribution)}" for cls in ADAPTERS.values()
    )
    return (
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPUs ({cpu_model()});"
        f" {platform.system()} {platform.release()}; Python {platform.python_version()};"
        f" torch {version_of('torch')}; {versions}"
    )


def timing_row(
    label: str, samples: dict[str, list[float]], keys: Sequence[str], scale: float, unit: str
) -> list[str]:
    ratios = paired_ratios(samples, TRACER) if TRACER in samples else {}
    cells = [label]
    for key in keys:
        if key not in samples:
            cells.append("—")
            continue
        text = Stats.of(samples[key]).show(scale, unit)
        if key != TRACER and key in ratios:
            text += f" · **x{fmt(ratios[key].median)}**"
        cells.append(text)
    return cells


def kill_rows(kills: dict[str, list[KillOutcome]], keys: Sequence[str]) -> list[list[str]]:
    lost, seconds, status = ["SIGKILL: steps lost (read back / logged)"], [], []
    seconds.append("SIGKILL: data lost, seconds of logging")
    status.append("SIGKILL: run left marked running?")
    for key in keys:
        outcomes = kills.get(key)
        if not outcomes:
            lost.append("—"), seconds.append("—"), status.append("—")
            continue
        steps = Stats.of([float(o.lost_steps) for o in outcomes])
        reads = ", ".join(f"{o.read}/{o.logged}" for o in outcomes)
        lost.append(f"{steps.show(1, 'steps', 4)}: {reads}")
        seconds.append(Stats.of([o.lost_s for o in outcomes]).show(1, "s", 3))
        status.append(describe_status(key, {o.status for o in outcomes}))
    return [lost, seconds, status]


def describe_status(key: str, statuses: set[str]) -> str:
    text = " / ".join(sorted(statuses))
    if key == "mlflow" and statuses == {"RUNNING"}:
        return "**yes**: status RUNNING"
    if key == TRACER:
        return "no: status " + text if "running" not in statuses else "**yes**: " + text
    return text


def table(results: Results) -> list[str]:
    keys = results.keys
    labels = [ADAPTERS[k].label for k in keys]
    lines = [
        "| measurement | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(keys),
    ]
    rows: list[list[str]] = []
    skipped = ["not run"] + [
        f"not run: {results.skipped[k]}" if k in results.skipped else "" for k in keys
    ]
    if results.skipped:
        rows.append(skipped)
    log = results.logging
    if log is not None:
        rows.append(timing_row("log 3 scalars, per step", log.per_step_s, keys, 1e6, "µs"))
        rows.append(timing_row("finish() after the steps", log.finish_s, keys, 1e3, "ms"))
        rows.append(timing_row("(all steps + finish) / steps", log.amortized_s, keys, 1e6, "µs"))
        rows.append(timing_row("init / start a run", log.start_s, keys, 1e3, "ms"))
        tracer_bytes = log.bytes_per_point.get(TRACER)
        row = ["disk bytes per logged point"]
        for key in keys:
            value = log.bytes_per_point.get(key)
            if value is None:
                row.append("—")
            elif key == TRACER or not tracer_bytes:
                row.append(f"{value:.1f} B (single)")
            else:
                row.append(f"{value:.1f} B (single) · **x{fmt(value / tracer_bytes)}**")
        rows.append(row)
    if results.kills:
        rows.extend(kill_rows(results.kills, keys))
    if results.imports:
        imports = {k: v for k, v in results.imports.items() if k in keys}
        rows.append(timing_row("import time (fresh interpreter)", imports, keys, 1e3, "ms"))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


GRAD_LABELS = {
    "none": "none",
    "tracer": "Tracer, every step",
    "wandb1": "wandb.watch(log_freq=1)",
    "wandb100": "wandb.watch(log_freq=100)",
    "seed": "seed-style per-parameter `.item()` hook",
}


def gradient_table(results: Results) -> list[str]:
    """Per column its block times, and the time it adds: the median over rounds of its block
    minus the none block of the same round (a paired difference: drifts of load cancel)."""
    grads = results.gradients
    base = grads["none"]
    tracer_added = paired_added(grads["tracer"], base)
    lines = [
        "| gradient tracking | ms per step | added vs none, paired | added / Tracer's |",
        "|---|---|---|---|",
    ]
    for key, samples in grads.items():
        added = paired_added(samples, base)
        times_tracer = ""
        if key == "tracer":
            times_tracer = "1"
        elif key != "none" and tracer_added > 0:
            times_tracer = f"x{fmt(added / tracer_added)}"
        percent = added / statistics.median(base) * 100
        lines.append(
            f"| {GRAD_LABELS[key]} | {Stats.of(samples).show(1e3, 'ms')} |"
            f" {added * 1e3:+.3f} ms ({percent:+.1f}%) | {times_tracer} |"
        )
    return lines


def paired_added(samples: list[float], base: list[float]) -> float:
    return statistics.median(s - b for s, b in zip(samples, base, strict=True))


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def targets(results: Results) -> list[str]:
    out: list[str] = []
    log = results.logging
    if log is not None:
        ratios = paired_ratios(log.per_step_s, TRACER)
        for key, floor in (("trackio", 3.0), ("wandb", 50.0)):
            if key in ratios:
                got = ratios[key].median
                out.append(
                    f"- Tracer's per-step logging cost at most 1/{floor:.0f} of"
                    f" {ADAPTERS[key].label}'s: {ADAPTERS[key].label} / Tracer ="
                    f" x{got:.3g} (per-round {ratios[key].low:.3g}-{ratios[key].high:.3g}):"
                    f" {verdict(got >= floor)}"
                )
            else:
                out.append(f"- per-step cost against {key}: not measured (peer not run)")
    tracer_kills = results.kills.get(TRACER, [])
    if tracer_kills:
        worst = max(o.lost_s for o in tracer_kills)
        out.append(
            f"- Tracer loses at most ~1 s of data on SIGKILL: worst of"
            f" {len(tracer_kills)} = {worst:.2f} s: {verdict(worst <= 1.25)}"
        )
        statuses = {o.status for o in tracer_kills}
        out.append(
            f"- Tracer never leaves a killed run marked running: status"
            f" {', '.join(sorted(statuses))}: {verdict('running' not in statuses)}"
        )
    grads = results.gradients
    if "tracer" in grads and "wandb100" in grads:
        ratio = paired_ratios(grads, "tracer")["wandb100"]
        tracer_added = paired_added(grads["tracer"], grads["none"]) * 1e3
        wandb_added = paired_added(grads["wandb100"], grads["none"]) * 1e3
        out.append(
            f"- Tracer's every-step gradient capture costs less than wandb.watch(log_freq=100):"
            f" +{tracer_added:.3f} vs +{wandb_added:.3f} ms per step; step time wandb/Tracer"
            f" per round x{ratio.median:.3g} ({ratio.low:.3g}-{ratio.high:.3g}):"
            f" {verdict(ratio.median > 1)}"
        )
    return out


def notes(results: Results) -> list[str]:
    if results.logging is None:
        return []
    steps = ", ".join(f"{ADAPTERS[k].label} {n:,}" for k, n in results.logging.steps.items())
    return [
        f"Logging: one run per tool per round, steps per run: {steps} (MLflow's fluent"
        " `log_metrics` commits one SQLAlchemy transaction per call, ~10 ms here, so it logs"
        " fewer steps; its figures are per step all the same). Bytes per point: (files after"
        " the last run - files of an empty run) / points, SQLite WALs checkpointed first.",
    ]


def render(results: Results) -> str:
    sizes = results.sizes
    lines = [
        f"# Tracer beside its peers{' (--quick)' if results.quick else ''}",
        "",
        f"Machine: {machine()}.",
        "",
        "Cells: `median unit (min-max, n=rounds)`; **xr** = that tool / Tracer, the median of"
        " per-round ratios (tools interleaved round by round, order rotating), so >1 means the"
        " tool costs more than Tracer.",
        "",
        *table(results),
        "",
        *notes(results),
        f"SIGKILL: a child process logs 3 scalars a step paced at {sizes.kill_rate:.0f}"
        f" steps/s and is killed (its whole process group) at step {sizes.kill_step:,} or"
        f" after {sizes.kill_after_s:.0f} s of logging, whichever comes first; seconds lost ="
        " steps lost / the rate it logged at.",
    ]
    if "torch" in results.imports:
        torch_ms = statistics.median(results.imports["torch"]) * 1e3
        lines.append(
            f"Import: TensorBoard's row is `from torch.utils.tensorboard import SummaryWriter`,"
            f" which imports torch (`import torch` alone: {torch_ms:.0f} ms in the same rounds)."
        )
    if results.gradients:
        lines += [
            "",
            f"Gradient tracking on a CPU MLP ({results.grad_parameters:,} parameters, batch 64,"
            f" AdamW, one thread), one copy of the model per column, mean per step over"
            f" blocks of {sizes.grad_steps} steps, {sizes.grad_rounds} interleaved rounds:",
            "",
            *gradient_table(results),
        ]
    lines += ["", "Targets:", "", *targets(results), ""]
    lines.append(f"Whole run: {results.wall_s:.0f} s.")
    return "\n".join(lines) + "\n"
