"""The table both adapter benchmarks print: a Trainer without Tracer, with its defaults, and
with gradient tracking off, from interleaved rounds of per-round figures."""

from __future__ import annotations

import statistics

VARIANT_NAMES = ("without", "with", "no-grad")


def describe(values: list[float], unit: str, digits: int = 2) -> str:
    """`median unit (min to max, n=count)`."""
    return (
        f"{statistics.median(values):.{digits}f} {unit}"
        f" ({min(values):.{digits}f} to {max(values):.{digits}f}, n={len(values)})"
    )


def print_costs(
    results: dict[str, list[dict[str, float]]],
    wall_label: str,
    one_time: tuple[tuple[str, str], ...] = (),
    digits: int = 2,
) -> None:
    """Rows: time per optimizer step (`step_ms`), its paired per-round difference, the
    one-time costs given as (label, key), and the wall time of the whole fit (`wall_s`)."""

    def column(name: str, key: str) -> list[float]:
        return [figures[key] for figures in results[name]]

    base_ms = statistics.median(column("without", "step_ms"))

    def cost(name: str) -> str:
        ms = statistics.median(column(name, "step_ms")) - base_ms
        return f"{ms:+.{digits}f} ms ({ms / base_ms * 100:+.1f}%)"

    def paired(name: str) -> str:
        base = column("without", "step_ms")
        diffs = [t - b for t, b in zip(column(name, "step_ms"), base, strict=True)]
        return describe(diffs, "ms", digits)

    def row(label: str, key: str, unit: str, last: str) -> None:
        cells = " | ".join(describe(column(name, key), unit, digits) for name in VARIANT_NAMES)
        print(f"| {label} | {cells} | {last} |")

    print(
        "| measurement | without Tracer | with Tracer (defaults)"
        " | with Tracer, track_gradients=False | Tracer's cost (defaults; no-grad) |"
    )
    print("|---|---|---|---|---|")
    row("time per optimizer step", "step_ms", "ms", f"{cost('with')}; {cost('no-grad')}")
    print(
        f"| per-round difference to without (paired) | | {paired('with')} | {paired('no-grad')} | |"
    )
    for label, key in one_time:
        row(label, key, "ms", "one-time")
    wall = {name: statistics.median(column(name, "wall_s")) for name in VARIANT_NAMES}
    row(
        wall_label,
        "wall_s",
        "s",
        f"{wall['with'] - wall['without']:+.2f} s; {wall['no-grad'] - wall['without']:+.2f} s",
    )
