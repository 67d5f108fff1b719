"""The anomaly-checkpoint state machine on its own: which episodes are new, which steps wait
for a collector's data, and when waiting ends (steps moved on, time passed, run ending)."""

from __future__ import annotations

from tracer.core.anomaly_checkpoints import AnomalyCheckpoints
from tracer.records import AnomalyWrite


def episode(step: int, kind: str = "loss_spike", subject: str = "loss") -> AnomalyWrite:
    return AnomalyWrite(
        run_id="r",
        step=step,
        anomaly_type=kind,
        severity="warning",
        subject=subject,
        value=9.0,
        baseline=1.0,
        threshold=3.0,
        message="m",
        detector=kind,
        end_step=step,
        count=1,
        open=True,
        hint="h",
    )


class Training:
    """The writer's view of training: how far it got, the time, what collectors still hold."""

    def __init__(self) -> None:
        self.progress = 0
        self.now = 100.0
        self.pending: set[int] = set()
        self.asked: list[int] = []

    def data_pending(self, step: int) -> bool:
        self.asked.append(step)
        return step in self.pending

    def machine(self) -> AnomalyCheckpoints:
        return AnomalyCheckpoints(
            lambda: self.progress,
            self.data_pending,
            wait_steps=2,
            wait_seconds=5.0,
            clock=lambda: self.now,
        )


POINTS = {
    "loss": ([4, 5, 6], [1.0, 9.0, 1.1]),
    "_timestamp": ([4, 5, 6], [1.0, 2.0, 3.0]),
    "lr": ([5], [0.1]),
}


def test_a_new_episode_is_ready_at_once_when_no_collector_holds_its_step() -> None:
    training = Training()
    machine = training.machine()
    new = machine.open([episode(5)], POINTS)
    assert [a["step"] for a in new] == [5]
    assert machine.ready(stopping=False) == [(5, {"loss": 9.0, "lr": 0.1})]
    assert not machine.waiting


def test_an_update_of_a_known_episode_is_not_new_and_takes_no_second_checkpoint() -> None:
    machine = Training().machine()
    machine.open([episode(5)], POINTS)
    machine.ready(stopping=False)
    grown = episode(5)
    grown["count"] = 3
    assert machine.open([grown], POINTS) == []
    assert machine.ready(stopping=False) == []


def test_two_episodes_at_one_step_share_one_checkpoint() -> None:
    machine = Training().machine()
    new = machine.open([episode(5), episode(5, "gradient_explosion", "grad")], POINTS)
    assert len(new) == 2
    assert [step for step, _ in machine.ready(stopping=False)] == [5]


def test_a_step_waits_while_its_data_is_pending_until_training_moves_on() -> None:
    training = Training()
    training.progress = 5
    training.pending = {5}
    machine = training.machine()
    machine.open([episode(5)], POINTS)
    assert machine.ready(stopping=False) == []
    assert machine.waiting and training.asked == [5]  # the collector was asked to send it
    training.progress = 7  # two steps on: still within the wait
    assert machine.ready(stopping=False) == []
    training.progress = 8
    assert machine.ready(stopping=False) == [(5, {"loss": 9.0, "lr": 0.1})]


def test_a_step_stops_waiting_once_its_data_arrived() -> None:
    training = Training()
    training.pending = {5}
    machine = training.machine()
    machine.open([episode(5)], POINTS)
    assert machine.ready(stopping=False) == []
    training.pending = set()
    assert [step for step, _ in machine.ready(stopping=False)] == [5]


def test_waiting_ends_after_the_time_limit_when_training_stalls() -> None:
    training = Training()
    training.pending = {5}
    machine = training.machine()
    machine.open([episode(5)], POINTS)
    training.now += 4.9
    assert machine.ready(stopping=False) == []
    training.now += 0.2
    assert [step for step, _ in machine.ready(stopping=False)] == [5]


def test_the_run_ending_takes_every_waiting_checkpoint_in_step_order() -> None:
    training = Training()
    training.pending = {5, 6}
    machine = training.machine()
    machine.open([episode(6, "gradient_explosion", "grad")], POINTS)
    machine.open([episode(5)], POINTS)
    assert machine.ready(stopping=False) == []
    asked = len(training.asked)
    assert [step for step, _ in machine.ready(stopping=True)] == [5, 6]
    assert len(training.asked) == asked  # ending does not ask collectors for more
    assert not machine.waiting


def test_values_come_from_the_batch_that_opened_the_step_not_a_later_one() -> None:
    training = Training()
    training.pending = {5}
    machine = training.machine()
    machine.open([episode(5)], POINTS)
    machine.open([], {"loss": ([7, 8], [1.0, 1.0])})  # a later batch without step 5
    training.pending = set()
    assert machine.ready(stopping=False) == [(5, {"loss": 9.0, "lr": 0.1})]


def test_a_step_outside_the_batch_gets_no_values() -> None:
    machine = Training().machine()
    machine.open([episode(50)], POINTS)
    assert machine.ready(stopping=False) == [(50, {})]


def test_an_episode_whose_severity_rises_is_announced_again_without_a_second_checkpoint() -> None:
    machine = Training().machine()
    assert len(machine.open([episode(5)], POINTS)) == 1
    machine.ready(stopping=False)
    critical = episode(5)
    critical["severity"] = "critical"
    assert machine.open([critical], POINTS) == [critical]
    assert machine.ready(stopping=False) == []  # the step's checkpoint was taken already
    assert machine.open([critical], POINTS) == []  # announced once at each severity
    calmer = episode(5)  # a later update never lowers what was announced
    assert machine.open([calmer], POINTS) == []


def test_episodes_reported_as_the_run_ends_are_announced_but_wait_for_no_checkpoint() -> None:
    machine = Training().machine()
    plateau = episode(40, "loss_plateau")
    plateau["severity"] = "info"
    assert machine.open([plateau], {}, checkpoints=False) == [plateau]
    assert not machine.waiting
    odd = episode(41, "third_party")
    odd["severity"] = "custom"  # a third-party detector's own word: announced when new
    assert machine.open([odd], {}, checkpoints=False) == [odd]
