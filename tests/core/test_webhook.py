"""Webhook notifications (`tracer.actions.webhook`) against a real HTTP receiver on 127.0.0.1.

Real runs (a torch MLP, plain loops with an injected spike, drop and NaN) post to a
`ThreadingHTTPServer`; a closed port and a server that never answers stand for broken
endpoints. The assertions are about what arrives, what is stored and what is logged; the one
time bound (finish with a hanging endpoint) is a guard far above the design's 2 s, checked
beside a count that shows finish stopped waiting while the request was in flight.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.core.helpers import open_store
from tests.core.processes import kill_leftover_children, run_child  # noqa: F401 (fixture)
from tests.core.webhook_receiver import Receiver, dead_url, receiving, wait_until
from tracer.actions.webhook import WebhookNotifier
from tracer.actions.webhook_delivery import ATTEMPTS, REQUEST_TIMEOUT_S
from tracer.actions.webhook_message import RunContext
from tracer.config import TracerConfig
from tracer.records import SEVERITIES, AnomalyWrite

SPIKE_STEP, DROP_STEP, NAN_STEP, STEPS = 100, 150, 200, 260
WARNING_OR_WORSE = ("warning", "critical")
SUMMARY = re.compile(
    r"(\d+) sent, (\d+) failed, (\d+) dropped \(queue full\), (\d+) unsent when the run ended,"
    r" (\d+) held back"
)


def loss_at(step: int) -> float:
    """A steady noisy loss with a spike (warning), a drop (info) and three NaN steps (one
    critical episode)."""
    if step == SPIKE_STEP:
        return 5.0
    if step == DROP_STEP:
        return 0.5
    if NAN_STEP <= step < NAN_STEP + 3:
        return math.nan
    return 1.0 + 0.01 * math.sin(step * 1.7)


def train_plain(steps: int = STEPS, healthy: bool = False, **settings: Any) -> str:
    run = tracer.init(project="hooks", write_buffer_size=20, **settings)
    for step in range(steps):
        tracer.log({"loss": 1.0 + 0.01 * math.sin(step * 1.7) if healthy else loss_at(step)})
        tracer.step()
    tracer.finish()
    return run.run_id


def keys(anomalies: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    return [(a["type"], a["episode_start"], a["subject"]) for a in anomalies]


def stored_episodes(run_id: str, severities: tuple[str, ...]) -> set[tuple[str, int, str]]:
    with open_store() as store:
        return {
            (a["anomaly_type"], a["step"], a["subject"])
            for a in store.get_anomalies(run_id)
            if a["severity"] in severities
        }


def webhook_records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "tracer.actions.webhook" and text in r.getMessage()
    ]


def summary(caplog: pytest.LogCaptureFixture) -> tuple[int, ...]:
    """(sent, failed, dropped, unsent at finish, held back) from the run-end log line."""
    for record in webhook_records(caplog, "webhook notifications"):
        found = SUMMARY.search(record.getMessage())
        if found:
            return tuple(int(n) for n in found.groups())
    raise AssertionError(f"no webhook summary with failures in the log: {caplog.text}")


def notifier_threads_done() -> bool:
    return not any(t.name == "tracer-webhook" and t.is_alive() for t in threading.enumerate())


@pytest.fixture
def receiver() -> Any:
    with receiving() as live:
        yield live


# -- what is sent ---------------------------------------------------------------------------
def test_a_real_torch_training_sends_one_message_per_episode(receiver: Receiver) -> None:
    """An MLP trained with SGD; the batch of step 40 holds a NaN, so the loss and every
    gradient go NaN from there on (the weights are NaN): long episodes, one message each."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    run = tracer.init(
        project="hooks",
        write_buffer_size=10,
        webhook_url=receiver.url,
        dashboard_url="http://127.0.0.1:8080/?token=t0k",
    )
    tracer.watch(model, optimizer)
    for step in range(80):
        x = torch.randn(8, 4)
        if step == 40:
            x[0, 0] = math.nan
        loss = torch.nn.functional.mse_loss(model(x), x.sum(dim=1, keepdim=True))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tracer.log({"loss": loss.detach()})
        tracer.step()
    tracer.finish()

    sent = keys(receiver.anomalies())
    assert len(sent) == len(set(sent)), sent  # never twice for one episode
    assert set(sent) == stored_episodes(run.run_id, WARNING_OR_WORSE)
    assert ("nan_or_inf", 40, "loss") in sent
    (message,) = [m for m in receiver.messages if m["anomaly"]["subject"] == "loss"]
    assert message["text"] == message["content"]
    assert "nan_or_inf" in message["text"] and run.run_name in message["text"]
    link = f"http://127.0.0.1:8080/?token=t0k#/run/{run.run_id}"
    assert link in message["text"]
    anomaly = message["anomaly"]
    assert anomaly["run_id"] == run.run_id and anomaly["run_name"] == run.run_name
    assert anomaly["project"] == "hooks"
    assert (anomaly["type"], anomaly["severity"], anomaly["episode_start"]) == (
        "nan_or_inf",
        "critical",
        40,
    )
    assert anomaly["step"] >= 40 and anomaly["message"] and anomaly["hint"]
    assert anomaly["value"] is None and anomaly["nonfinite"]["value"] == "NaN"
    assert anomaly["url"] == link


def test_a_healthy_run_sends_nothing(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tracer")
    train_plain(healthy=True, webhook_url=receiver.url)
    assert receiver.requests == 0
    assert webhook_records(caplog, "webhook notifications: 0 sent")


@pytest.mark.parametrize(
    ("least", "expected"),
    [
        ("info", {"loss_spike", "loss_drop", "nan_or_inf", "loss_plateau"}),
        ("warning", {"loss_spike", "nan_or_inf"}),
        ("critical", {"nan_or_inf"}),
    ],
)
def test_only_episodes_at_or_above_the_severity_are_sent(
    receiver: Receiver, least: str, expected: set[str]
) -> None:
    run_id = train_plain(webhook_url=receiver.url, webhook_min_severity=least)
    sent = keys(receiver.anomalies())
    assert {kind for kind, _, _ in sent} == expected
    assert sorted(sent) == sorted(set(sent))
    wanted = SEVERITIES[SEVERITIES.index(least) :]
    # At info this includes a converged plateau (info) that the plateau detector reports only
    # when the run ends: the hook announces it then, and finish waits for its message.
    assert set(sent) == set(stored_episodes(run_id, wanted))
    assert {a["severity"] for a in receiver.anomalies()} <= set(wanted)


def episode(
    step: int, end_step: int, severity: str = "warning", kind: str = "loss_spike"
) -> AnomalyWrite:
    return {
        "run_id": "r1",
        "step": step,
        "anomaly_type": kind,
        "severity": severity,
        "subject": "loss",
        "value": 5.0,
        "baseline": 1.0,
        "threshold": 2.0,
        "message": f"loss spiked at {step}",
        "detector": "loss_spike",
        "end_step": end_step,
        "count": end_step - step + 1,
        "open": True,
        "hint": "lower the lr",
    }


def test_an_episode_seen_again_as_it_grows_is_sent_once(receiver: Receiver) -> None:
    notifier = WebhookNotifier(receiver.url, RunContext("r1", "run-one", "hooks", None))
    notifier.offer(episode(10, 10))
    notifier.offer(episode(10, 12))  # the same episode, grown
    notifier.offer(episode(10, 14, severity="critical"))  # and worse
    notifier.offer(episode(30, 30))  # a new one
    report = notifier.close()
    assert keys(receiver.anomalies()) == [("loss_spike", 10, "loss"), ("loss_spike", 30, "loss")]
    assert (report.sent, report.failed, report.held_back) == (2, 0, 0)
    assert receiver.anomalies()[0]["url"] is None  # no dashboard configured: no link


def test_the_rate_limit_counts_what_it_holds_back_and_names_it_later(receiver: Receiver) -> None:
    now = [1000.0]
    notifier = WebhookNotifier(
        receiver.url,
        RunContext("r1", "run-one", "hooks", None),
        max_per_minute=2,
        clock=lambda: now[0],
    )
    for step in (10, 20, 30, 40):
        notifier.offer(episode(step, step))
    assert wait_until(lambda: len(receiver.messages) == 2)
    now[0] += 61.0  # a minute later the window has room again
    notifier.offer(episode(50, 50, severity="critical", kind="nan_or_inf"))
    notifier.offer(episode(60, 60))
    notifier.offer(episode(70, 70))  # over the cap again: held back, announced at close
    report = notifier.close()
    assert (report.sent, report.held_back, report.dropped) == (5, 3, 0)
    messages = receiver.messages
    assert keys(receiver.anomalies()) == [
        ("loss_spike", 10, "loss"),
        ("loss_spike", 20, "loss"),
        ("nan_or_inf", 50, "loss"),
        ("loss_spike", 60, "loss"),
    ]
    assert messages[2]["held_back"] == {"loss_spike": 2}
    assert "2 more anomalies held back by the rate limit" in messages[2]["text"]
    assert messages[3]["held_back"] == {}
    assert messages[4]["anomaly"] is None and messages[4]["held_back"] == {"loss_spike": 1}
    assert messages[4]["run"]["run_id"] == "r1"


def test_a_run_over_the_rate_limit_announces_the_rest_at_finish(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    train_plain(webhook_url=receiver.url, webhook_max_per_minute=1)
    assert len(receiver.anomalies()) == 1
    (last,) = [m for m in receiver.messages if m["anomaly"] is None]
    assert sum(last["held_back"].values()) == 1
    assert summary(caplog) == (2, 0, 0, 0, 1)


# -- configuration ----------------------------------------------------------------------------
def test_the_environment_sets_the_url_and_the_dashboard_link(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACER_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("TRACER_DASHBOARD_URL", "https://dash.example/tracer")
    assert TracerConfig(project="p").webhook_url == receiver.url
    assert TracerConfig(project="p", webhook_url=None).webhook_url is None  # explicit: off
    run_id = train_plain(webhook_min_severity="critical")
    (anomaly,) = receiver.anomalies()
    assert anomaly["url"] == f"https://dash.example/tracer/#/run/{run_id}"


def test_bad_settings_are_refused_without_echoing_the_url() -> None:
    secret = "hooks/T0/B0/not-for-logs"
    for url in (f"ftp://example.com/{secret}", f"/{secret}", f"https:///{secret}"):
        with pytest.raises(ValueError, match="webhook_url") as refused:
            TracerConfig(project="p", webhook_url=url)
        assert secret not in str(refused.value)
    with pytest.raises(ValueError, match="webhook_min_severity"):
        TracerConfig(project="p", webhook_min_severity="error")
    with pytest.raises(ValueError, match="webhook_max_per_minute"):
        TracerConfig(project="p", webhook_max_per_minute=0)
    config = TracerConfig(project="p", webhook_url=f"https://example.com/{secret}")
    with pytest.raises(ValueError) as refused:
        config.webhook_url = f"file:///{secret}"
    assert secret not in str(refused.value)
    with pytest.raises(ValueError) as refused:  # another field's error shows no input either
        TracerConfig(project="p", webhook_url=f"https://example.com/{secret}", checkpoint_intrval=1)
    assert secret not in str(refused.value)


def test_the_url_is_never_stored_logged_or_shown(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    with receiving("status:500") as failing:
        config = TracerConfig(project="p", webhook_url=failing.url)
        assert failing.secret not in repr(config) and failing.secret not in str(config)
        run_id = train_plain(webhook_url=failing.url, config={"lr": 0.1})
        assert wait_until(notifier_threads_done)
        assert failing.requests >= 1  # it was used, and failed: the failure was logged
    assert webhook_records(caplog, "could not deliver")
    files = [p for p in (tmp_path / ".tracer").rglob("*") if p.is_file()]
    assert any(p.name == "tracer.db" for p in files)
    for path in files:
        data = path.read_bytes()
        assert failing.secret.encode() not in data, path
        assert b"webhook" not in data, path  # not even the setting's name: no config of it
    assert failing.secret not in caplog.text
    assert "127.0.0.1" in caplog.text  # the host is named, the path never
    with open_store() as store:
        run = store.get_run(run_id)
    assert run is not None and run["config"] == {"lr": 0.1}


# -- broken endpoints -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_dead_endpoint_is_reported_once_and_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tracer")
    run_id = train_plain(webhook_url=dead_url())
    with open_store() as store:
        run = store.get_run(run_id)
    assert run is not None and (run["status"], run["total_steps"]) == ("finished", STEPS)
    sent, failed, dropped, unsent, _ = summary(caplog)
    assert (sent, dropped) == (0, 0) and failed + unsent == 2  # the spike and the NaN
    assert wait_until(notifier_threads_done)
    assert len(webhook_records(caplog, "could not deliver")) == 1


@pytest.mark.slow
def test_a_hanging_endpoint_holds_finish_no_longer_than_its_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tracer")
    with receiving("hang") as hanging:
        run = tracer.init(project="hooks", webhook_url=hanging.url)
        for step in range(60):
            tracer.log({"loss": math.nan if step == 50 else 1.0})
            tracer.step()
        run.flush()  # the NaN is judged: its message is on its way
        assert wait_until(lambda: hanging.requests == 1)  # ... and held by the endpoint
        started = time.monotonic()
        tracer.finish()
        elapsed = time.monotonic() - started
        assert hanging.requests == 1 and not hanging.release.is_set()  # still unanswered
        # waiting for the answer would take ATTEMPTS timeouts; finish stops at FINISH_WAIT_S
        assert elapsed < ATTEMPTS * REQUEST_TIMEOUT_S, elapsed
        assert summary(caplog) == (0, 0, 0, 1, 0)
        with open_store() as store:
            stored = store.get_run(run.run_id)
        assert stored is not None and stored["status"] == "finished"
        # the attempt in flight times out after finish; the failure is told once, no retry
        assert wait_until(notifier_threads_done)
        assert len(webhook_records(caplog, "could not deliver")) == 1
        assert hanging.requests == 1


@pytest.mark.slow
def test_a_process_ends_promptly_with_a_hanging_endpoint_and_no_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is ended by the atexit handler; the notifier's thread is a daemon, so the
    process exits although the endpoint still holds the request."""
    script = """
        import math, sys
        import tracer
        tracer.init(project="p", storage_path=sys.argv[1])
        for step in range(60):
            tracer.log({"loss": math.nan if step == 50 else 1.0})
            tracer.step()
        print("trained", flush=True)
    """
    with receiving("hang") as hanging:
        monkeypatch.setenv("TRACER_WEBHOOK_URL", hanging.url)
        done = run_child(script, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "trained" in done.stdout
        assert hanging.requests == 1 and not hanging.release.is_set()
        assert "1 unsent when the run ended" in done.stderr
        assert hanging.secret not in done.stderr


@pytest.mark.slow
def test_only_the_rank_that_stores_the_run_sends(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gloo ranks, a NaN in rank 0's batch of step 10 (tests/core/distributed_training.py,
    mode "halt"): rank 1 is a follower (run id ""), and sends nothing."""
    distributed = pytest.importorskip("torch.distributed")
    if not (distributed.is_available() and distributed.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    from tests.torchrun import run_torchrun

    monkeypatch.setenv("TRACER_WEBHOOK_URL", receiver.url)
    script = Path(__file__).with_name("distributed_training.py")
    run_torchrun(script, ["halt", 200], tmp_path)
    with open_store(str(tmp_path / ".tracer")) as store:
        (run,) = store.list_runs("distributed")
        run_id = run["run_id"]
        stored = {
            (a["anomaly_type"], a["step"], a["subject"])
            for a in store.get_anomalies(run_id)
            if a["severity"] in WARNING_OR_WORSE
        }
    sent = keys(receiver.anomalies())
    assert sent and len(sent) == len(set(sent))
    assert set(sent) == stored
    assert {a["run_id"] for a in receiver.anomalies()} == {run_id}
