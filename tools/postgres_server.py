"""A throwaway PostgreSQL server for the tests and the benchmark of tracer-postgres.

    python tools/postgres_server.py -- pytest tests/postgres -q

starts a fresh cluster from Debian's binaries (`apt-get install -y postgresql` when `initdb`
is missing), runs the command with `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE` and
`TRACER_TEST_POSTGRES_URL` set, and always stops the server and removes its files afterwards;
the command's exit status is the script's. The server listens on a unix socket in its temp
directory (local connections trust the OS user) and on 127.0.0.1 at a free port, where a
password is required (scram-sha-256), so a test can see a wrong password refused.

`initdb` and `pg_ctl` refuse to run as root; as root (CI) they run as the `postgres` user
through `runuser`. `TRACER_TEST_POSTGRES_DATA` and `TRACER_TEST_POSTGRES_BIN` tell a test
where the cluster is, so it can restart the server (`PostgresServer.restart`).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Optional

SUPERUSER = "postgres"
DATABASE = "tracer_test"
PASSWORD = "tracer-test-secret"  # of the superuser, for TCP connections (tests only)


def find_bin_dir() -> str:
    """Where `initdb` and `pg_ctl` are: PATH, else Debian's versioned directory."""
    on_path = shutil.which("initdb")
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in [os.path.dirname(os.path.realpath(on_path)) if on_path else "", *debian]:
        if directory and all(
            os.path.exists(os.path.join(directory, tool)) for tool in ("pg_ctl", "createdb")
        ):
            return directory
    return ""


def ensure_binaries() -> str:
    directory = find_bin_dir()
    if directory:
        return directory
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(["apt-get", "install", "-y", "postgresql"], check=True)
    directory = find_bin_dir()
    if not directory:
        raise SystemExit("postgresql was installed but initdb/pg_ctl were not found")
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def as_server_user(command: Sequence[str]) -> list[str]:
    """The command as the `postgres` user when we are root (initdb and pg_ctl refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *command]
    return list(command)


class PostgresServer:
    """One cluster in a temp directory: `start()`, `restart()`, `stop()` (removes it)."""

    def __init__(self, bin_dir: str, root: Optional[str] = None) -> None:
        self.bin_dir = bin_dir
        self.root = root or tempfile.mkdtemp(prefix="tracer-pg-")
        self.data = os.path.join(self.root, "data")
        self.socket_dir = self.root
        self.port = free_port()
        self.user = SUPERUSER if os.geteuid() == 0 else os.environ.get("USER", SUPERUSER)

    def _tool(self, name: str, *args: str, quiet: bool = True) -> None:
        command = as_server_user([os.path.join(self.bin_dir, name), *args])
        output = subprocess.DEVNULL if quiet else None
        subprocess.run(command, check=True, stdout=output, cwd="/")

    def _ctl(self, action: str, *args: str) -> None:
        self._tool(
            "pg_ctl", action, "-D", self.data, "-w", "-t", "60",
            "-l", os.path.join(self.root, "server.log"), *args,
        )  # fmt: skip

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, SUPERUSER)
        os.chmod(self.root, 0o755)
        password_file = os.path.join(self.root, "pwfile")
        with open(password_file, "w") as handle:
            handle.write(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(password_file, SUPERUSER)
        self._tool(
            "initdb", "-D", self.data, "-U", self.user, "--pwfile", password_file,
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nshared_buffers = 256MB\nmax_wal_size = 4GB\n"
            )
        self._ctl("start")
        self._tool(
            "createdb", "-h", self.socket_dir, "-p", str(self.port), "-U", self.user, DATABASE
        )

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def halt(self) -> None:
        """Stop the server but keep its cluster (`resume` starts it again)."""
        self._ctl("stop", "-m", "fast")

    def resume(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def environment(self) -> dict[str, str]:
        return {
            "PGHOST": self.socket_dir,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": DATABASE,
            "TRACER_TEST_POSTGRES_URL": (
                f"postgresql://{self.user}@/{DATABASE}?host={self.socket_dir}&port={self.port}"
            ),
            "TRACER_TEST_POSTGRES_PASSWORD": PASSWORD,
            "TRACER_TEST_POSTGRES_DATA": self.root,
            "TRACER_TEST_POSTGRES_BIN": self.bin_dir,
        }


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    server = PostgresServer(ensure_binaries())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def attach() -> PostgresServer:
    """The server this process's environment names (set by `main`), to restart it."""
    server = PostgresServer(
        os.environ["TRACER_TEST_POSTGRES_BIN"], os.environ["TRACER_TEST_POSTGRES_DATA"]
    )
    server.port = int(os.environ["PGPORT"])
    server.user = os.environ["PGUSER"]
    return server


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = [part for part in args.command if part != "--"] or ["true"]
    with running_server() as server:
        environment = {**os.environ, **server.environment()}
        return subprocess.run(command, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
