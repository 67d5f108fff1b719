"""Anomaly episodes: one report for a condition that lasts, instead of one per step.

A detector judges observations (values of a series, captures, checkpoints, samples). The
first anomalous observation of a (type, subject) opens an episode; each further one extends
it (`end_step`, `count`); once `gap` calm observations of that subject have followed its last
anomalous one, the episode closes and a later anomaly opens a new one. The state depends only
on the order of observations, never on how they are cut into feeds, so online detection (one
flush at a time) and offline replay (whole series) report the same episodes.

Detectors report what changed since their last call (`drain`): a new episode, or an update
of one already reported under the same identity (type, start step, subject), which storage
applies to the stored row.
"""

from __future__ import annotations

from collections.abc import Callable

from tracer.detection.findings import Finding

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

EpisodeKey = tuple[str, str]  # (anomaly type, subject)


class Episodes:
    """The open episodes of one detector, and the changes not reported yet."""

    __slots__ = ("_by_subject", "_calm", "_changed", "_open", "gap")

    def __init__(self, gap: int) -> None:
        self.gap = max(1, int(gap))
        self._open: dict[EpisodeKey, Finding] = {}
        self._by_subject: dict[str, list[EpisodeKey]] = {}
        self._calm: dict[EpisodeKey, int] = {}
        self._changed: dict[tuple[str, int, str], Finding] = {}

    def is_open(self, anomaly_type: str, subject: str) -> bool:
        return (anomaly_type, subject) in self._open

    def any_open(self, subject: str) -> bool:
        return subject in self._by_subject

    def hit(
        self,
        anomaly_type: str,
        subject: str,
        step: int,
        make: Finding | Callable[[], Finding],
        severity: str = "",
    ) -> bool:
        """An anomalous observation at `step`. Opens an episode with `make` (a finding, or a
        function called only then) when none of this type is open for `subject`, else extends
        the open one (its severity rises to `severity` when that is worse, and then its message
        and hint become `make`'s). True when an episode opened."""
        key = (anomaly_type, subject)
        episode = self._open.get(key)
        opened = episode is None
        if episode is None:
            episode = make() if callable(make) else make.copy()
            episode["end_step"] = int(step)
            episode["count"] = 1
            episode["open"] = True
            self._open[key] = episode
            self._by_subject.setdefault(subject, []).append(key)
        else:
            episode["end_step"] = int(step)
            episode["count"] = episode.get("count", 1) + 1
            if SEVERITY_RANK.get(severity, -1) > SEVERITY_RANK[episode["severity"]]:
                risen = make() if callable(make) else make  # says why it is worse now
                episode["severity"] = severity
                episode["message"] = risen["message"]
                if "hint" in risen:
                    episode["hint"] = risen["hint"]
        self._calm[key] = 0
        self._changed[(anomaly_type, episode["step"], subject)] = episode
        return opened

    def calm(self, subject: str, observations: int = 1) -> None:
        """`observations` calm observations of `subject`: its open episodes close once `gap`
        of them followed their last anomalous one. Costs a dict lookup when none is open."""
        keys = self._by_subject.get(subject)
        if not keys:
            return
        for key in list(keys):
            calm = self._calm[key] + observations
            self._calm[key] = calm
            if calm >= self.gap:
                self._close(key)

    def close_all(self) -> None:
        """The run ended: every open episode closes where it was last seen."""
        for key in list(self._open):
            self._close(key)

    def _close(self, key: EpisodeKey) -> None:
        episode = self._open.pop(key)
        del self._calm[key]
        keys = self._by_subject[key[1]]
        keys.remove(key)
        if not keys:
            del self._by_subject[key[1]]
        episode["open"] = False
        self._changed[(key[0], episode["step"], key[1])] = episode

    def drain(self) -> list[Finding]:
        """The episodes opened, extended or closed since the last drain (copies), in the
        order they first changed."""
        if not self._changed:
            return []
        changed = [episode.copy() for episode in self._changed.values()]
        self._changed.clear()
        return changed
