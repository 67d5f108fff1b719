"""What a webhook notification says, as JSON any receiver reads.

One body serves Slack (incoming webhooks read `text`), Discord (webhooks read `content`, at
most 2,000 characters) and anything else (the structured `anomaly` object), so a user points
`webhook_url` at whichever they have and nothing else is configured. Non-finite numbers (a NaN
loss is the usual reason for a message) are sent as `null` with a `nonfinite` marker naming
the kind, as the dashboard's JSON does, since JSON has no NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional
from urllib.parse import quote, urlsplit, urlunsplit

from tracer.records import AnomalyWrite

MAX_TEXT_CHARS = 1900  # Discord refuses `content` over 2,000 characters
_MARKS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


class RunContext(NamedTuple):
    """The run a notification is about (what `RunHandle` tells at run start)."""

    run_id: str
    run_name: str
    project: str
    dashboard_url: Optional[str]  # where `tracer ui` serves the store, when configured


def episode_key(anomaly: AnomalyWrite) -> tuple[str, int, str]:
    """An episode's identity: the hook may see it again as it grows, under the same key."""
    return (anomaly["anomaly_type"], anomaly["step"], anomaly["subject"])


def masked_url(url: str) -> str:
    """The URL as logs may show it: scheme and host only (a webhook's path is its secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
    except ValueError:
        return "<webhook>"
    return f"{parts.scheme}://{host}/..."


def run_link(dashboard_url: Optional[str], run_id: str) -> Optional[str]:
    """The dashboard page of the run: `tracer ui` routes `#/run/<id>` (the page keeps the
    query string, where its `?token=` lives), so the link is the configured URL with that
    fragment. The run page has no step parameter: the step is in the message."""
    if not dashboard_url:
        return None
    parts = urlsplit(dashboard_url)
    path = parts.path if parts.path.endswith("/") else f"{parts.path}/"
    fragment = f"/run/{quote(run_id, safe='')}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, fragment))


def _kind(value: float) -> str:
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _json_numbers(anomaly: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """`names` as JSON numbers: None where non-finite, plus `nonfinite` {name: kind}."""
    out: dict[str, Any] = {}
    nonfinite: dict[str, str] = {}
    for name in names:
        value = float(anomaly[name])
        if value - value != 0.0:
            nonfinite[name] = _kind(value)
            out[name] = None
        else:
            out[name] = value
    out["nonfinite"] = nonfinite
    return out


def _held_back_line(held_back: Mapping[str, int]) -> str:
    total = sum(held_back.values())
    kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(held_back.items()))
    return (
        f"({total} more anomal{'y' if total == 1 else 'ies'} held back by the rate limit"
        f" since the previous message: {kinds})"
    )


def _body(text: str, extra: dict[str, Any]) -> dict[str, Any]:
    if len(text) > MAX_TEXT_CHARS:
        text = text[: MAX_TEXT_CHARS - 3] + "..."
    return {"text": text, "content": text, **extra}


def anomaly_message(
    anomaly: AnomalyWrite, run: RunContext, held_back: Mapping[str, int]
) -> dict[str, Any]:
    """The body announcing one episode; `held_back` counts, by type, the episodes the rate
    limit kept from being announced since the previous message."""
    link = run_link(run.dashboard_url, run.run_id)
    step = anomaly["end_step"]
    where = f"step {step}" if step == anomaly["step"] else f"step {step} (since {anomaly['step']})"
    mark = _MARKS.get(anomaly["severity"], "")
    headline = (
        f"{mark} Tracer: {anomaly['severity']} {anomaly['anomaly_type']} in run"
        f" {run.run_name} (project {run.project}), {where}"
    )
    lines = [headline.strip(), anomaly["message"]]
    if anomaly["hint"]:
        lines.append(f"What to try: {anomaly['hint']}")
    if link:
        lines.append(f"Open: {link}")
    if held_back:
        lines.append(_held_back_line(held_back))
    structured = {
        "run_id": run.run_id,
        "run_name": run.run_name,
        "project": run.project,
        "step": step,
        "episode_start": anomaly["step"],
        "type": anomaly["anomaly_type"],
        "severity": anomaly["severity"],
        "subject": anomaly["subject"],
        "message": anomaly["message"],
        "hint": anomaly["hint"],
        "detector": anomaly["detector"],
        **_json_numbers(anomaly, ("value", "baseline", "threshold")),
        "url": link,
    }
    return _body("\n".join(lines), {"anomaly": structured, "held_back": dict(held_back)})


def held_back_message(run: RunContext, held_back: Mapping[str, int]) -> dict[str, Any]:
    """The last body of a run whose final episodes the rate limit held back: without it,
    those would only be in the log."""
    link = run_link(run.dashboard_url, run.run_id)
    lines = [
        f"Tracer: run {run.run_name} (project {run.project}) ended",
        _held_back_line(held_back),
    ]
    if link:
        lines.append(f"Open: {link}")
    return _body(
        "\n".join(lines),
        {
            "anomaly": None,
            "held_back": dict(held_back),
            "run": {"run_id": run.run_id, "run_name": run.run_name, "project": run.project},
            "url": link,
        },
    )
