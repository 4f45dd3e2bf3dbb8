"""The soak's own servers: a private PostgreSQL cluster and a private Redis, each on a free port
under a temporary directory, plus the web and worker processes of the platform.

Nothing here touches the machine's shared PostgreSQL (5432) or Redis (6379): the soak
restarts *its* servers to inject faults, and removes them at the end (also on failure or
Ctrl-C, see :class:`Stack.close`).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class SoakSetupError(RuntimeError):
    """A tool the soak needs is missing or a server would not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, *, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SoakSetupError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SoakSetupError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _pg_bindir() -> Path:
    """The newest installed PostgreSQL server binaries (Debian layout, else the PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise SoakSetupError(
        "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: the soak runs its "
        "own private cluster. Install them (apt-get install -y postgresql)."
    )


class PrivatePostgres:
    """A throwaway cluster made with ``initdb`` in ``root``; as root, run as ``postgres``."""

    def __init__(self, root: Path, port: int):
        self.bindir = _pg_bindir()
        self.root = root
        self.data = root / "data"
        self.sock = root / "sock"
        self.log = root / "postgres.log"
        self.port = port
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise SoakSetupError(
                    "running as root, the soak needs runuser (util-linux) to run PostgreSQL "
                    "as the postgres user"
                )
            self._as_postgres = [runuser, "-u", "postgres", "--"]

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run(
            [*self._as_postgres, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise SoakSetupError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        # A small cluster: the machine is shared, and the soak needs few connections.
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# bench/soak\nlisten_addresses = '127.0.0.1'\nmax_connections = 100\n"
                "shared_buffers = 64MB\nlogging_collector = off\n"
            )

    def start(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            f"-p {self.port} -k {self.sock}",
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "stop",
            check=False,
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run(
            str(self.bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-Atc",
            sql,
        )

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")


class PrivateRedis:
    """``redis-server`` as a child process, in memory only (no RDB, no AOF)."""

    def __init__(self, root: Path, port: int):
        self.exe = shutil.which("redis-server")
        if self.exe is None:
            raise SoakSetupError(
                "redis-server is not installed: the soak runs its own private Redis. "
                "Install it (apt-get install -y redis-server)."
            )
        self.root = root
        self.port = port
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.log = open(root / "redis.log", "ab")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_port(self.port, 20, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # an outage, not a graceful shutdown
            self.proc.wait(timeout=10)
        self.proc = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class Managed:
    """A platform process (gunicorn, the Celery worker) in its own process group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_offset = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.log_offset = log.tell()  # where this start's output begins
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: the main process and its children (pool, beat)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # and anything left of the group
        self.proc = None

    def output_since_start(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def python_argv(*args: str) -> list[str]:
    return [sys.executable, *args]
