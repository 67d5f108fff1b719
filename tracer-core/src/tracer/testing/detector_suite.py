"""`DetectorConformance`: the behaviour every anomaly detector owes the rest of Tracer.

A detector runs twice over the same data: online, on the writer thread, fed one flush at a
time, and offline, where `AnomalyDetector` replays each whole stored series at once. The two
only agree when the detector depends on the order of its input and never on how it is cut
into pieces; and a detector runs inside someone's training, so odd input (NaN, inf, series it
never heard of) must not make it raise. This suite checks exactly that, plus the shape of
what it reports, so a plugin author learns it here rather than from a user's run.

    from tracer.testing import DetectorConformance, DetectorStream

    class TestMyDetector(DetectorConformance):
        detector_class = MyDetector

        def fault_stream(self) -> DetectorStream:
            steps = list(range(100))
            values = [1.0] * 60 + [50.0] * 40  # the fault MyDetector exists to find
            return DetectorStream(series={"my_metric": (steps, values)})

Every built-in detector passes the same suite (tests/core/test_detector_conformance.py).
"""

from __future__ import annotations

import difflib
import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Optional, Union

import pytest

from tracer.detection.base import SEVERITIES, Detector, DetectorContext, Finding
from tracer.detection.runner import DetectorSet, merge_episodes
from tracer.records import AnomalyWrite
from tracer.testing.detector_streams import (
    DetectorStream,
    Piece,
    SeriesPoints,
    make_checkpoint,
    make_event,
    split_stream,
)

FINDING_KEYS = frozenset(Finding.__annotations__)
_FLOAT_KEYS = ("value", "baseline", "threshold")
_STR_KEYS = ("anomaly_type", "severity", "subject", "message")

# Names a detector is asked about in `test_wants_is_stable_per_name`, next to its own series.
COMMON_SERIES = (
    "loss",
    "train/loss",
    "val_loss",
    "accuracy",
    "lr",
    "learning_rate",
    "grad/global_norm",
    "m1.grad/global_norm",
    "grad/fc.weight/norm",
    "optimizer/skipped_step",
    "system/process_rss_mb",
    "system/gpu0/memory_used_mb",
    "system/gpu0/memory_total_mb",
    "_tracer/internal",
)

# Candidates for a series nobody asked for (`test_a_stream_it_does_not_want_is_harmless`).
_UNWANTED_CANDIDATES = (
    "conformance/unrelated_counter",
    "_conformance_internal",
    "zz.unrelated/value",
    "epoch",
)


class DetectorSwitchedOff(AssertionError):
    """The detector raised: in a run it would be switched off (the cause is chained)."""


class _StrictDetectorSet(DetectorSet):
    """The runner used in training, except that a detector that raises fails the test."""

    def _disable(self, detector: Detector, action: str) -> None:
        raise DetectorSwitchedOff(
            f"detector {detector.name!r} raised in {action}; a run would switch it off"
        )


def _float_key(value: float) -> Union[float, str]:
    return "nan" if value != value else value


def comparable(anomalies: Sequence[AnomalyWrite]) -> list[tuple[Any, ...]]:
    """Findings as sorted, NaN-safe tuples: what "identical findings" compares."""
    return sorted(
        (
            a["step"],
            a["anomaly_type"],
            a["subject"],
            a["severity"],
            _float_key(a["value"]),
            _float_key(a["baseline"]),
            _float_key(a["threshold"]),
            a["message"],
            a["detector"],
            a.get("end_step", a["step"]),
            a.get("count", 1),
            a.get("open", False),
        )
        for a in anomalies
    )


def _poison(values: Sequence[float], offset: int) -> list[float]:
    bad = (math.nan, math.inf, -math.inf)
    return [
        bad[(i + offset) // 3 % 3] if (i + offset) % 3 == 0 else float(v)
        for i, v in enumerate(values)
    ]


class DetectorConformance:
    """Tests a detector must pass. Set `detector_class` and override `fault_stream`.

    `settings()` gives the settings the detector is built with (default: its defaults) and
    `context()` the run-wide context (default: losses are the series matching "*loss*").
    `fault_types` names the anomaly types the fault stream must produce (empty: any of the
    declared ones).
    """

    detector_class: ClassVar[type[Detector]]
    fault_types: ClassVar[tuple[str, ...]] = ()
    chunk_seeds: ClassVar[tuple[int, ...]] = (0, 1, 2, 3)

    # -- what a subclass provides -----------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """Settings the detector is built with in every test (keys from its `defaults`)."""
        return {}

    def context(self) -> DetectorContext:
        return DetectorContext()

    def fault_stream(self) -> DetectorStream:
        """A stream that MUST make the detector report at least one finding."""
        raise NotImplementedError(
            "return a DetectorStream containing the fault your detector exists to find"
        )

    # -- helpers ----------------------------------------------------------------------------
    def make_detector(self) -> Detector:
        cls: Optional[type[Detector]] = getattr(self, "detector_class", None)
        if cls is None:
            raise NotImplementedError("set detector_class = YourDetector on the test class")
        return cls(self.settings(), self.context())

    def feed(self, *pieces: Piece) -> list[AnomalyWrite]:
        """Feed pieces in order through one fresh detector, as a run's flushes would, then end
        the run; each episode once, in its final state."""
        runner = _StrictDetectorSet("conformance-run", [self.make_detector()])
        found: list[AnomalyWrite] = []
        for points, events, checkpoints in pieces:
            found.extend(runner.feed(points, events, checkpoints))
        found.extend(runner.finish())
        return merge_episodes(found)  # what storage keeps: each episode's last state

    def _checked_stream(self) -> DetectorStream:
        stream = self.fault_stream()
        for name, (steps, values) in stream.series.items():
            assert len(steps) == len(values), f"fault_stream: {name!r} steps/values lengths differ"
            assert list(steps) == sorted(steps), f"fault_stream: {name!r} is not in step order"
        for part in ("events", "checkpoints"):
            part_steps = [item["step"] for item in getattr(stream, part)]
            assert part_steps == sorted(part_steps), f"fault_stream: {part} not in step order"
        return stream

    @staticmethod
    def _whole(stream: DetectorStream) -> Piece:
        points: dict[str, SeriesPoints] = {
            name: (list(s), list(v)) for name, (s, v) in stream.series.items()
        }
        return points, list(stream.events), list(stream.checkpoints)

    def assert_well_formed(self, found: Sequence[AnomalyWrite], stream: DetectorStream) -> None:
        """Every finding has the Finding keys and types, a declared type and a stream step."""
        cls = self.detector_class
        steps = stream.steps()
        seen: set[tuple[str, int, str]] = set()
        for anomaly in found:
            extra = set(anomaly) - FINDING_KEYS - {"run_id", "detector"}
            missing = FINDING_KEYS - set(anomaly)
            assert not extra and not missing, (
                f"finding keys: missing {sorted(missing)}, unexpected {sorted(extra)}: {anomaly}"
            )
            assert anomaly["detector"] == cls.name
            assert anomaly["anomaly_type"] in cls.anomaly_types, (
                f"{anomaly['anomaly_type']!r} is not in anomaly_types {cls.anomaly_types}"
            )
            assert anomaly["severity"] in SEVERITIES, f"severity must be one of {SEVERITIES}"
            step = anomaly["step"]
            assert isinstance(step, int) and not isinstance(step, bool), f"step {step!r}"
            assert step in steps, f"step {step} is not a step of the stream"
            for key in _STR_KEYS:
                value = anomaly[key]  # type: ignore[literal-required]
                assert isinstance(value, str), f"{key} must be a str: {value!r}"
            assert anomaly["message"], "message must say what happened"
            for key in _FLOAT_KEYS:
                value = anomaly[key]  # type: ignore[literal-required]
                assert isinstance(value, float), f"{key} must be a float (NaN if none): {value!r}"
            end = anomaly["end_step"]
            assert isinstance(end, int) and end >= step, f"end_step {end!r} before step {step}"
            assert end in steps, f"end_step {end} is not a step of the stream"
            assert isinstance(anomaly["count"], int) and anomaly["count"] >= 1
            assert anomaly["open"] is False, "the run ended: every episode must be closed"
            identity = (anomaly["anomaly_type"], step, anomaly["subject"])
            assert identity not in seen, (
                f"{identity} reported twice; storage keeps one per (type, step, subject)"
            )
            seen.add(identity)

    # -- declaration and settings -----------------------------------------------------------
    def test_declares_name_and_anomaly_types(self) -> None:
        cls = self.detector_class
        assert issubclass(cls, Detector)
        assert isinstance(cls.name, str) and cls.name.strip() == cls.name != "", (
            "set name: the key of TracerConfig.detectors"
        )
        assert isinstance(cls.anomaly_types, tuple) and cls.anomaly_types, (
            "set anomaly_types: every type the detector can report (halt_on checks them)"
        )
        assert all(isinstance(t, str) and t for t in cls.anomaly_types)
        assert len(set(cls.anomaly_types)) == len(cls.anomaly_types)
        assert isinstance(cls.defaults, Mapping)
        assert all(isinstance(key, str) for key in cls.defaults)

    def test_default_settings_are_accepted(self) -> None:
        cls = self.detector_class
        assert cls().settings == dict(cls.defaults)
        assert cls(dict(cls.defaults)).settings == dict(cls.defaults)
        detector = self.make_detector()
        assert detector.settings == {**cls.defaults, **self.settings()}

    def test_unknown_setting_names_the_closest_valid_key(self) -> None:
        cls = self.detector_class
        for key in cls.defaults:
            middle = len(key) // 2
            typo = key[:middle] + key[middle + 1 :] if len(key) > 2 else key + "_x"
            if typo not in cls.defaults and difflib.get_close_matches(
                typo, list(cls.defaults), n=1
            ) == [key]:
                with pytest.raises(ValueError, match=re.escape(repr(key))):
                    cls({typo: cls.defaults[key]})
                break
        with pytest.raises(ValueError, match="no_such_setting"):
            cls({"no_such_setting_at_all": 1})

    # -- findings ---------------------------------------------------------------------------
    def test_empty_input_gives_no_findings(self) -> None:
        stream = self._checked_stream()
        assert self.feed(({}, [], [])) == []
        empty: dict[str, SeriesPoints] = {name: ([], []) for name in stream.series}
        assert self.feed((empty, [], [])) == []

    def test_fault_stream_is_detected(self) -> None:
        stream = self._checked_stream()
        found = self.feed(self._whole(stream))
        assert found, "fault_stream() must make the detector report at least one finding"
        missing = set(self.fault_types) - {a["anomaly_type"] for a in found}
        assert not missing, f"the fault stream did not produce {sorted(missing)}"

    def test_findings_are_well_formed(self) -> None:
        stream = self._checked_stream()
        self.assert_well_formed(self.feed(self._whole(stream)), stream)

    # -- online equals offline --------------------------------------------------------------
    @pytest.mark.parametrize("cut", ["one-step-pieces", "random-pieces"])
    def test_findings_do_not_depend_on_how_the_stream_is_cut(self, cut: str) -> None:
        stream = self._checked_stream()
        whole = comparable(self.feed(self._whole(stream)))
        if cut == "one-step-pieces":
            cuts: list[list[Piece]] = [split_stream(stream, 1)]
        else:
            cuts = [split_stream(stream, random.Random(seed)) for seed in self.chunk_seeds]
        for pieces in cuts:
            assert comparable(self.feed(*pieces)) == whole, (
                f"fed in {len(pieces)} pieces the findings differ from one piece: online and"
                " offline detection would disagree"
            )

    def test_fresh_instances_are_deterministic(self) -> None:
        stream = self._checked_stream()
        first = self.feed(self._whole(stream))
        second = self.feed(self._whole(stream))
        assert comparable(first) == comparable(second)
        assert [a["step"] for a in first] == [a["step"] for a in second]

    # -- robustness -------------------------------------------------------------------------
    def test_nan_and_inf_values_never_raise(self) -> None:
        stream = self._checked_stream()
        poisoned = DetectorStream(
            series={
                name: (list(steps), _poison(values, offset))
                for offset, (name, (steps, values)) in enumerate(sorted(stream.series.items()))
            },
            events=list(stream.events),
            checkpoints=[
                {
                    **c,
                    "gradient_stats": {
                        layer: dict(zip(stats, _poison(list(stats.values()), i), strict=True))
                        for i, (layer, stats) in enumerate(c["gradient_stats"].items())
                    },
                }
                for c in stream.checkpoints
            ],
        )
        self.assert_well_formed(self.feed(self._whole(poisoned)), poisoned)
        only_bad = DetectorStream(
            series={
                name: (list(steps), [(math.nan, math.inf, -math.inf)[i % 3] for i in steps])
                for name, (steps, _) in stream.series.items()
            }
        )
        self.assert_well_formed(self.feed(*split_stream(only_bad, 3)), only_bad)

    def test_a_stream_it_does_not_want_is_harmless(self) -> None:
        """Series it does not want, events of unknown kinds and empty checkpoints: no error,
        no finding (a run's other data must not trip the detector)."""
        detector = self.make_detector()
        names = [name for name in _UNWANTED_CANDIDATES if not detector.wants(name)]
        steps = list(range(50))
        stream = DetectorStream(
            series={name: (steps, [float(i % 7) for i in steps]) for name in names},
            events=[make_event(s, "conformance_unknown_kind") for s in steps[::10]],
            checkpoints=[make_checkpoint(s) for s in steps[9::10]],
        )
        for piece in (self._whole(stream), *split_stream(stream, 7)):
            runner = _StrictDetectorSet("conformance-run", [self.make_detector()])
            assert runner.feed(*piece) == []

    def test_wants_is_stable_per_name(self) -> None:
        """The runner asks `wants` once per series and caches it: it must be a pure function
        of the name (and the settings), not of what was seen so far."""
        stream = self._checked_stream()
        names = sorted({*stream.series, *COMMON_SERIES, *_UNWANTED_CANDIDATES})
        detector = self.make_detector()
        before = {name: detector.wants(name) for name in names}
        assert all(isinstance(v, bool) for v in before.values()), "wants must return a bool"
        runner = _StrictDetectorSet("conformance-run", [detector])
        runner.feed(*self._whole(stream))
        assert {name: detector.wants(name) for name in names} == before
        assert {name: self.make_detector().wants(name) for name in names} == before
