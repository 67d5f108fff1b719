"""What webhook notifications cost a training loop, with a live, a dead and a hanging endpoint.

    python benchmarks/bench_webhook.py            # 200,000 steps a case, 5 rounds (~1 min)
    python benchmarks/bench_webhook.py --quick    # 20,000 steps a case, 2 rounds (a smoke run)

Each case is one run of a loop that calls `tracer.log({"loss": ...})` and `tracer.step()` as
fast as it can, with a NaN every 1,000 steps (a new `nan_or_inf` episode each time: 200
episodes in 200,000 steps, far more than a real run has) and `webhook_max_per_minute`
raised to 10,000 so that every episode is posted (but in one case). The loop's time includes
a closing `flush()`, so the writer thread's work (detection, the anomaly hook, queueing the
message) is counted.
Cases, interleaved round by round in rotating order so machine load hits all alike:

- `no webhook`: the baseline, the same loop and anomalies with no `webhook_url`;
- `live receiver`: an HTTP server in another process answering 204;
- `live receiver, default cap`: the same with the default `webhook_max_per_minute` (10): what
  a real configuration posts;
- `dead endpoint`: a closed port (every attempt is refused at once, then retried);
- `hanging endpoint`: a server in another process that accepts and never answers (each
  attempt waits for its timeout; the queue fills and further messages are dropped).

Figures: per-step time (median and range over the rounds) and its ratio to `no webhook`
(the claim: within noise, about 1.0x, for every endpoint), `finish()` time (bounded by the
2 s wait for queued messages), and what the notifier reported at run end. The table goes to
stdout, progress to stderr; the exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

import tracer

NAN_EVERY = 1_000
CASES = (
    "no webhook",
    "live receiver",
    "live receiver, default cap",
    "dead endpoint",
    "hanging endpoint",
)
UNCAPPED = 10_000  # webhook_max_per_minute of every case but the default-cap one

# An endpoint in its own process (so its work does not share this process's GIL): "ok"
# answers 204 to POSTs, "hang" reads them and never answers; GET /count says how many came.
SERVER = textwrap.dedent(
    """
    import sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    mode, count, lock, never = sys.argv[1], [0], threading.Lock(), threading.Event()
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                count[0] += 1
            if mode == "hang":
                never.wait()
            self.send_response(204)
            self.end_headers()
        def do_GET(self):
            body = str(count[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Endpoint:
    """A receiver process (modes "ok" and "hang")."""

    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, mode], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}/hooks/bench"

    def received(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as answer:
            return int(answer.read())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def dead_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/bench"


class SummaryCatcher(logging.Handler):
    """Keeps the notifier's run-end line (its counts)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "webhook notifications:" in message:
            self.lines.append(message.split("webhook notifications: ", 1)[1])


@dataclass
class Case:
    name: str
    per_step_us: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    outcome: str = ""


def one_run(storage: str, steps: int, url: str | None, cap: int) -> tuple[float, float]:
    run = tracer.init(
        project="bench-webhook",
        storage_path=storage,
        webhook_url=url,
        webhook_max_per_minute=cap,
        track_system_metrics=False,
        retention_days=0,
    )
    values = [1.0 + 0.01 * math.sin(i * 1.7) for i in range(97)]
    started = time.perf_counter()
    for step in range(steps):
        loss = math.nan if step % NAN_EVERY == NAN_EVERY - 1 else values[step % 97]
        tracer.log({"loss": loss})
        tracer.step()
    run.flush()
    loop = time.perf_counter() - started
    started = time.perf_counter()
    tracer.finish()
    return loop / steps * 1e6, time.perf_counter() - started


def median_range(values: Sequence[float], unit: str, digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit}"
        f" ({min(values):.{digits}f}-{max(values):.{digits}f}, n={len(values)})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="20,000 steps, 2 rounds")
    args = parser.parse_args(argv)
    steps, rounds = (20_000, 2) if args.quick else (200_000, 5)
    catcher = SummaryCatcher()
    logging.getLogger("tracer.actions.webhook").addHandler(catcher)
    logging.getLogger("tracer.actions.webhook").setLevel(logging.INFO)
    logging.getLogger("tracer.actions.webhook").propagate = False  # the failure warnings
    live, hanging = Endpoint("ok"), Endpoint("hang")
    urls = {
        "no webhook": None,
        "live receiver": live.url,
        "live receiver, default cap": live.url,
        "dead endpoint": dead_url(),
        "hanging endpoint": hanging.url,
    }
    cases = {name: Case(name) for name in CASES}
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-webhook-") as storage:
            for index in range(rounds):
                order = CASES[index % len(CASES) :] + CASES[: index % len(CASES)]
                for name in order:
                    catcher.lines.clear()
                    cap = 10 if name.endswith("default cap") else UNCAPPED
                    per_step, finish = one_run(storage, steps, urls[name], cap)
                    cases[name].per_step_us.append(per_step)
                    cases[name].finish_s.append(finish)
                    cases[name].outcome = catcher.lines[-1] if catcher.lines else "-"
                    progress(f"round {index + 1}/{rounds} {name}: {per_step:.2f} us/step")
        received = {"live receiver": live.received(), "hanging endpoint": hanging.received()}
    finally:
        live.stop()
        hanging.stop()
    baseline = statistics.median(cases["no webhook"].per_step_us)
    episodes = steps // NAN_EVERY
    print(
        f"Webhook notification cost: {steps:,} steps a case, {episodes} NaN episodes each,"
        f" {rounds} rounds; Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print()
    print("| case | loop + flush per step | ratio to no webhook | finish() | notifier at run end |")
    print("|---|---|---|---|---|")
    for case in cases.values():
        ratio = statistics.median(case.per_step_us) / baseline
        print(
            f"| {case.name} | {median_range(case.per_step_us, 'us')} | {ratio:.2f}x"
            f" | {median_range(case.finish_s, 's')} | {case.outcome or '(no webhook)'} |"
        )
    print()
    print(
        f"POSTs that reached the endpoints over all rounds: live {received['live receiver']},"
        f" hanging {received['hanging endpoint']}."
    )
    print(f"Took {time.monotonic() - began:,.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
