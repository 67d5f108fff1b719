"""Every built-in detector passes the conformance suite third-party detectors subclass.

Each class builds the smallest realistic stream holding the fault its detector exists to
find; the suite then checks the findings' shape, that cutting the stream into flushes never
changes them (online equals offline), and that NaN, inf and unrelated data never raise.
"""

from __future__ import annotations

from tracer.detection.builtin import BUILTIN_DETECTORS
from tracer.detection.gradient import (
    DeadLayerDetector,
    GradientExplosionDetector,
    VanishingGradientDetector,
)
from tracer.detection.loss import LossDivergenceDetector, LossSpikeDetector
from tracer.detection.memory import MemoryDetector
from tracer.detection.nonfinite import NanOrInfDetector
from tracer.detection.plateau import LossPlateauDetector
from tracer.detection.ranks import RankDivergenceDetector
from tracer.detection.replicas import ReplicaDivergenceDetector
from tracer.testing import DetectorConformance, DetectorStream, make_checkpoint, make_event


def noisy(center: float, count: int, scale: float = 0.01, seed: int = 0) -> list[float]:
    """Deterministic small noise around `center` (no RNG: the same on every platform)."""
    return [center + scale * (((i + seed) * 7919) % 11 - 5) / 5 for i in range(count)]


def layer_stats(**norms: float) -> dict[str, dict[str, float]]:
    return {
        layer.replace("_", "."): {"norm": norm, "max_norm_since_checkpoint": norm}
        for layer, norm in norms.items()
    }


class TestNanOrInf(DetectorConformance):
    detector_class = NanOrInfDetector
    fault_types = ("nan_or_inf",)

    def fault_stream(self) -> DetectorStream:
        steps = list(range(40))
        loss = noisy(1.0, 40)
        loss[10] = float("nan")  # an episode of one step
        loss[20:23] = [float("inf"), float("nan"), float("-inf")]  # one episode of three
        accuracy = noisy(0.5, 40)
        accuracy[30] = float("inf")
        return DetectorStream(
            series={"loss": (steps, loss), "val/accuracy": (steps, accuracy)},
            events=[
                make_event(s, "nonfinite_gradients", {"layers": ["fc1.weight", "fc2.weight"]})
                for s in (15, 16, 17, 25)  # two episodes: 15-17 and 25
            ],
        )


class TestGradientExplosion(DetectorConformance):
    detector_class = GradientExplosionDetector
    fault_types = ("gradient_explosion",)

    def fault_stream(self) -> DetectorStream:
        steps = list(range(100))
        norm = noisy(1.0, 100, scale=0.1)
        norm[70] = 80.0  # 80x the running median
        norm[71] = 60.0  # same episode
        second = noisy(2.0, 100, scale=0.1, seed=3)
        second[5] = 5e6  # above the ceiling before any baseline
        checkpoints = [
            make_checkpoint(s, layer_stats(fc1_weight=1.0 + s / 1000, fc2_weight=0.5))
            for s in range(9, 100, 10)
        ]
        checkpoints[6] = make_checkpoint(69, layer_stats(fc1_weight=1.0, fc2_weight=40.0))
        return DetectorStream(
            series={"grad/global_norm": (steps, norm), "m1.grad/global_norm": (steps, second)},
            events=[make_event(0, "gradient_capture", {"point": "after_backward"})],
            checkpoints=checkpoints,
        )


def explosion_findings(norm: list[float]) -> list[object]:
    detector = GradientExplosionDetector()
    steps = list(range(len(norm)))
    return detector.observe("grad/global_norm", steps, norm) + detector.finish()


def test_a_converged_run_bumping_under_its_first_norms_is_no_explosion() -> None:
    """Full-batch Adam near its minimum: the norm fell from ~1 to 0.02 and bumps to 0.5 for a
    few steps (25x its median), still under where the run started."""
    start = [1.5 * 0.95**i for i in range(32)]  # the first captures, peak 1.5
    norm = start + [0.02] * 60 + [0.05, 0.14, 0.27, 0.5, 0.3, 0.05] + [0.02] * 20
    assert explosion_findings(norm) == []
    norm[95] = 2.5  # past the first captures, not twice as far: Adam's bump near a minimum
    assert explosion_findings(norm) == []
    norm[95] = 4.0  # above twice the first captures peak too: an explosion
    found = explosion_findings(norm)  # the episode as opened, then as closed
    assert {f["step"] for f in found} == {95}  # type: ignore[index]
    assert "2.7x its peak of the first captures 1.5" in found[0]["message"]  # type: ignore[index]


def spike_findings(loss: list[float]) -> list[object]:
    detector = LossSpikeDetector()
    steps = list(range(len(loss)))
    return detector.observe("loss", steps, loss) + detector.finish()


def test_a_hard_batch_of_a_converged_classifier_is_no_loss_spike() -> None:
    """Cross-entropy at 0.008 with a MAD of ~0.002: a batch at 0.1 is 40 robust sigmas but a
    tenth of the way back to where the run began (1.5)."""
    start = [1.5 * 0.9**i for i in range(32)]
    loss = start + noisy(0.008, 80, scale=0.002) + [0.1] + noisy(0.008, 20, scale=0.002)
    assert spike_findings(loss) == []
    loss[112] = 0.5  # a third of the way back: a spike
    found = spike_findings(loss)
    assert {f["step"] for f in found} == {112}  # type: ignore[index]


class TestVanishingGradient(DetectorConformance):
    detector_class = VanishingGradientDetector
    fault_types = ("vanishing_gradient",)

    def fault_stream(self) -> DetectorStream:
        norms = [1e-12, 1e-12, 0.5, 1e-13, 1e-13]  # vanishes, recovers, vanishes again
        return DetectorStream(
            checkpoints=[
                make_checkpoint(
                    10 * (i + 1) - 1,
                    layer_stats(fc1_weight=1.0, fc2_weight=0.8, emb_weight=norm, head_bias=0.0),
                )
                for i, norm in enumerate(norms)
            ]
        )


class TestDeadLayer(DetectorConformance):
    detector_class = DeadLayerDetector
    fault_types = ("dead_layer",)

    def fault_stream(self) -> DetectorStream:
        norms = [0.3, 0.0, 0.0, 0.2, 0.0]  # dies, stays dead, recovers, dies again
        return DetectorStream(
            checkpoints=[
                make_checkpoint(10 * (i + 1) - 1, layer_stats(fc1_weight=1.0, relu_out=norm))
                for i, norm in enumerate(norms)
            ]
        )


class TestLossSpike(DetectorConformance):
    detector_class = LossSpikeDetector
    fault_types = ("loss_spike", "loss_drop")

    def fault_stream(self) -> DetectorStream:
        steps = list(range(150))
        loss = noisy(1.0, 150)
        loss[60] = 10.0  # a spike
        loss[61] = 9.0  # within the cooldown: the same spike
        loss[120] = 0.01  # a drop
        val_loss = noisy(2.0, 150, seed=4)
        val_loss[100] = 50.0
        return DetectorStream(series={"loss": (steps, loss), "val_loss": (steps, val_loss)})


class TestLossDivergence(DetectorConformance):
    detector_class = LossDivergenceDetector
    fault_types = ("loss_divergence",)

    def fault_stream(self) -> DetectorStream:
        medians = [1.0, 0.9, 1.0, 1.3, 1.6, 2.0, 2.5, 0.8, 0.8]  # climbs, then recovers
        loss = [v for m in medians for v in noisy(m, 20)]
        return DetectorStream(series={"train/loss": (list(range(len(loss))), loss)})


class TestLossPlateau(DetectorConformance):
    detector_class = LossPlateauDetector
    fault_types = ("loss_plateau",)

    def fault_stream(self) -> DetectorStream:
        medians = [2.0, 1.5, 1.2] + [1.1] * 8 + [0.5, 0.4]  # improves, stalls, improves
        loss = [v for m in medians for v in noisy(m, 25)]
        return DetectorStream(series={"loss": (list(range(len(loss))), loss)})


class TestMemory(DetectorConformance):
    detector_class = MemoryDetector
    fault_types = ("memory_spike", "memory_leak")

    def fault_stream(self) -> DetectorStream:
        steps = list(range(0, 600, 10))  # a sample every 10 steps
        count = len(steps)
        rss = noisy(1000.0, count, scale=5.0)
        rss[30] = 2500.0  # a jump
        allocated = [500.0 + 20.0 * i for i in range(count)]  # a steady leak
        used = noisy(8000.0, count, scale=50.0)
        used[40:44] = [15800.0] * 4  # near the GPU's capacity
        return DetectorStream(
            series={
                "system/process_rss_mb": (steps, rss),
                "system/torch/allocated_mb": (steps, allocated),
                "system/gpu0/memory_total_mb": (steps, [16000.0] * count),
                "system/gpu0/memory_used_mb": (steps, used),
            }
        )


class TestRankDivergence(DetectorConformance):
    detector_class = RankDivergenceDetector
    fault_types = ("rank_divergence",)

    def fault_stream(self) -> DetectorStream:
        steps = list(range(1, 41))
        norms = {rank: noisy(2.0, 40, scale=0.5, seed=rank) for rank in range(3)}
        norms[2][9:11] = [float("nan"), float("inf")]  # rank 2 alone goes non-finite
        norms[1][24:30] = [60.0] * 6  # rank 1 drifts 30x above the others
        for rank in range(3):
            norms[rank][35] = float("nan")  # every rank at once: not a divergence
        return DetectorStream(
            series={f"rank/{rank}/grad_norm": (steps, values) for rank, values in norms.items()},
            events=[make_event(1, "rank_summaries", {"world_size": 3, "grad_norm": "local"})],
        )


class TestReplicaDivergence(DetectorConformance):
    detector_class = ReplicaDivergenceDetector
    fault_types = ("replica_divergence",)

    def fault_stream(self) -> DetectorStream:
        steps = list(range(0, 1000, 50))
        same = noisy(5.0, len(steps), scale=0.5, seed=3)
        apart = [v if i < 8 else v * 1.01 for i, v in enumerate(same)]  # ranks 1 and 2 drift
        return DetectorStream(
            series={
                "rank/0/weight_fingerprint": (steps, same),
                "rank/1/weight_fingerprint": (steps, apart),
                "rank/2/weight_fingerprint": (steps, apart),
            },
            events=[make_event(0, "rank_summaries", {"world_size": 3, "grad_norm": "local"})],
        )


def test_every_builtin_detector_has_a_conformance_class() -> None:
    from tests.core import test_silent_detectors  # the silent-bug detectors' classes

    tested = {
        cls.detector_class
        for cls in [*globals().values(), *vars(test_silent_detectors).values()]
        if isinstance(cls, type)
        and issubclass(cls, DetectorConformance)
        and cls.__name__[:4] == "Test"
    }
    assert tested == set(BUILTIN_DETECTORS)
