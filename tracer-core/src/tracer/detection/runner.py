"""Running a set of detectors over data, the same way online and offline.

`DetectorSet.feed(points, events, checkpoints)` takes one slice of a run: its events first
(they carry context such as the capture point), then series points (in series-name order),
then checkpoints, each in step order. The writer thread
calls it once per flush; `AnomalyDetector` calls it once with the whole stored run; both call
`finish()` once the run has ended, which closes the episodes still open. What they return are
episode states: a later state of the same (type, step, subject) replaces an earlier one
(`merge_episodes` does what storage does). A detector that raises is reported once and
switched off for the rest of the run: a broken plugin never stops training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tracer.detection.base import Detector, DetectorContext, Finding
from tracer.detection.hints import default_hint
from tracer.records import AnomalyWrite, CheckpointWrite, EventWrite

logger = logging.getLogger(__name__)


def detection_settings(config: Any) -> dict[str, Any]:
    """What a run stores so offline detection judges it with its own settings."""
    return {"detectors": dict(config.detectors), "loss_metrics": list(config.loss_metrics)}


def build_detectors(
    registry: Mapping[str, type[Detector]],
    settings: Mapping[str, Any],
    loss_metrics: Sequence[str],
    only: Optional[Sequence[str]] = None,
    *,
    strict: bool = True,
) -> list[Detector]:
    """Instantiate the registered detectors that `settings` leaves enabled.

    `settings[name]` is False to disable a detector, True or a dict of its settings to
    enable it (an opt-in one, `enabled_by_default = False`, runs only then). `only`
    restricts to detectors reporting one of those anomaly types. An unknown name is an error
    when `strict` (a user's typo), else it is skipped with a warning (settings stored with a
    run that used a plugin this machine does not have).
    """
    import difflib

    for name in settings:
        if name not in registry:
            close = difflib.get_close_matches(name, list(registry), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = (
                f"unknown detector {name!r} in detectors{hint}"
                f" (installed: {', '.join(sorted(registry))})"
            )
            if strict:
                raise ValueError(message)
            logger.warning("%s; it is skipped.", message)
    context = DetectorContext(loss_metrics)
    detectors = []
    for name, cls in registry.items():
        # unknown names were dealt with above; an opt-in detector needs True or its settings
        chosen = settings.get(name, cls.enabled_by_default)
        if chosen is False:
            continue
        if only is not None and not set(cls.anomaly_types) & set(only):
            continue
        detectors.append(cls(chosen if isinstance(chosen, Mapping) else None, context))
    return detectors


def to_anomaly(run_id: str, detector: str, found: Finding) -> AnomalyWrite:
    """The stored shape of a finding: the episode fields a detector left out filled in."""
    return {
        "run_id": run_id,
        "step": found["step"],
        "anomaly_type": found["anomaly_type"],
        "severity": found["severity"],
        "subject": found["subject"],
        "value": found["value"],
        "baseline": found["baseline"],
        "threshold": found["threshold"],
        "message": found["message"],
        "detector": detector,
        "end_step": int(found.get("end_step", found["step"])),
        "count": int(found.get("count", 1)),
        "open": bool(found.get("open", False)),
        "hint": found.get("hint") or default_hint(found["anomaly_type"]),
    }


def episode_key(anomaly: AnomalyWrite) -> tuple[str, int, str]:
    return (anomaly["anomaly_type"], anomaly["step"], anomaly["subject"])


def merge_episodes(anomalies: Sequence[AnomalyWrite]) -> list[AnomalyWrite]:
    """One entry per episode, its latest state, in the order episodes first appeared."""
    latest: dict[tuple[str, int, str], AnomalyWrite] = {}
    for anomaly in anomalies:
        latest[episode_key(anomaly)] = anomaly
    return list(latest.values())


class DetectorSet:
    """Detectors of one run, with per-series routing cached and failures contained."""

    def __init__(
        self, run_id: str, detectors: list[Detector], only_types: Optional[Sequence[str]] = None
    ) -> None:
        self.run_id = run_id
        self.detectors = detectors
        self._routes: dict[str, list[Detector]] = {}
        self._only = set(only_types) if only_types is not None else None

    def _route(self, series: str) -> list[Detector]:
        route = self._routes.get(series)
        if route is None:
            route = self._routes[series] = [d for d in self.detectors if d.wants(series)]
        return route

    def _disable(self, detector: Detector, action: str) -> None:
        logger.exception(
            "Tracer detector %r failed in %s and is switched off for this run; training goes on.",
            detector.name,
            action,
        )
        self.detectors = [d for d in self.detectors if d is not detector]
        self._routes = {
            series: [d for d in route if d is not detector]
            for series, route in self._routes.items()
        }

    def _feed_items(self, method: str, items: Sequence[Any], out: list[AnomalyWrite]) -> None:
        for item in items:
            for detector in list(self.detectors):
                try:
                    found = getattr(detector, method)(item)
                except Exception:
                    self._disable(detector, method)
                    continue
                out.extend(to_anomaly(self.run_id, detector.name, f) for f in found)

    def feed(
        self,
        points: Mapping[str, tuple[Sequence[int], Sequence[float]]],
        events: Sequence[EventWrite] = (),
        checkpoints: Sequence[CheckpointWrite] = (),
    ) -> list[AnomalyWrite]:
        anomalies: list[AnomalyWrite] = []
        self._feed_items("observe_event", events, anomalies)  # first: they set up context
        for series in sorted(points):
            route = self._route(series)
            if not route:
                continue
            steps, values = points[series]
            for detector in list(route):
                try:
                    found = detector.observe(series, steps, values)
                except Exception:
                    self._disable(detector, f"observe({series!r})")
                    continue
                anomalies.extend(to_anomaly(self.run_id, detector.name, f) for f in found)
        self._feed_items("observe_checkpoint", checkpoints, anomalies)
        return self._chosen(merge_episodes(anomalies))

    def finish(self) -> list[AnomalyWrite]:
        """The run ended: every detector's open episodes, now closed."""
        anomalies: list[AnomalyWrite] = []
        for detector in list(self.detectors):
            try:
                found = detector.finish()
            except Exception:
                self._disable(detector, "finish")
                continue
            anomalies.extend(to_anomaly(self.run_id, detector.name, f) for f in found)
        return self._chosen(merge_episodes(anomalies))

    def _chosen(self, anomalies: list[AnomalyWrite]) -> list[AnomalyWrite]:
        if self._only is not None:
            return [a for a in anomalies if a["anomaly_type"] in self._only]
        return anomalies
