"""Make sure Debian's Chromium is at /usr/bin/chromium before the browser tests run.

Run by tox (`[testenv:browser]` commands_pre) so that CI, a fresh Debian machine running as
root, installs it from the Debian mirror: `playwright install` downloads browsers from a CDN
that CI cannot reach, while `apt-get install chromium` only needs the Debian mirror.

- Chromium present: print its version, exit 0.
- Missing, root and apt-get available: `apt-get update`, `apt-get install -y
  --no-install-recommends chromium`, then check again; exit 1 if that failed, so that CI
  reports the broken set-up instead of quietly skipping the browser tests.
- Missing otherwise (a developer machine, not root): print how to install it and exit 0; the
  browser tests then skip with that reason (tests/browser/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = (
    "sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium"
    " (Debian/Ubuntu; any Chromium at /usr/bin/chromium will do)"
)
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _say(message: str) -> None:
    sys.stdout.write(f"ensure_chromium: {message}\n")
    sys.stdout.flush()


def chromium_version(path: str | None = None) -> str | None:
    """`chromium --version` ("Chromium 1xx... built on Debian..."), or None if it won't run."""
    path = path or CHROMIUM
    if not os.access(path, os.X_OK):
        return None
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # Debian's wrapper script may print shell noise on stderr; the version is on stdout.
    version = done.stdout.strip()
    return version if done.returncode == 0 and version else None


def _apt(args: list[str], timeout: float) -> bool:
    """Run apt-get with `args`, its output streamed to ours; True if it succeeded in time."""
    command = ["apt-get", "-q", "-o", "Dpkg::Use-Pty=0", *args]
    _say("running " + " ".join(command))
    try:
        done = subprocess.run(command, env=_APT_ENV, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        _say(f"apt-get {args[0]} did not finish within {timeout:.0f} s")
        return False
    except OSError as exc:
        _say(f"could not run apt-get: {exc}")
        return False
    if done.returncode != 0:
        _say(f"apt-get {args[0]} failed with exit status {done.returncode}")
    return done.returncode == 0


def main() -> int:
    version = chromium_version()
    if version is not None:
        _say(f"{version} at {CHROMIUM}")
        return 0
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not (is_root and shutil.which("apt-get")):
        why = "not root" if not is_root else "no apt-get on this machine"
        _say(
            f"{CHROMIUM} not found and not installed automatically ({why}); the browser tests"
            f" will be skipped. Install it with: {INSTALL_HINT}"
        )
        return 0
    started = time.monotonic()
    if not (
        _apt(["update", "-qq"], timeout=300)
        and _apt(["install", "-y", "--no-install-recommends", "chromium"], timeout=600)
    ):
        _say(f"installing Chromium failed; install it by hand: {INSTALL_HINT}")
        return 1
    version = chromium_version()
    if version is None:
        _say(f"apt-get installed chromium but {CHROMIUM} does not run")
        return 1
    _say(f"installed {version} at {CHROMIUM} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
