"""Serving benchmark: N simulated annotators against our stack and against Label Studio.

    .venv/bin/python -m bench.serving            # N = 1, 8, 32, 64; both systems
    .venv/bin/python -m bench.serving --quick    # N = 1, 8; short runs; a smoke test

Starts everything itself: our stack (gunicorn serving rlhf_platform.wsgi on PostgreSQL,
Redis broker and cache, one Celery worker with beat; DEBUG off) and Label Studio (installed
into var/serving/ls-venv on first use, served by gunicorn on the same PostgreSQL, its own
database). For each system and N it creates a fresh campaign/project of the same size and
overlap, runs N annotators (next, then submit, in a loop) for a warm-up and a measured
window, then checks the database. Writes var/serving/results.json and results.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.serving import client as load
from bench.serving import integrity
from bench.serving.stats import summarize_ms

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var" / "serving"
LOGS = VAR / "logs"
VENV_PY = ROOT / ".venv" / "bin" / "python"
LS_VERSION = "1.23.2"
GUNICORN_VERSION = "27.0.1"  # the same as ours (requirements.lock)
UWSGI_VERSION = "2.0.31"  # Label Studio's Docker image serves with uWSGI 2.0
PY_SPY_VERSION = "0.4.3"
LS_VENV = VAR / "ls-venv"
TOOLS = VAR / "tools"  # py-spy, installed on first use of --profile
PG_HOST = "127.0.0.1"
PG_PORT = 5432  # set by main(): the benchmark's own cluster (--pg private) or the machine's


def pg_url() -> str:
    return f"postgres://postgres@{PG_HOST}:{PG_PORT}"


PAIRWISE_CONFIG = """<View>
  <Header value="$prompt"/>
  <Pairwise name="pw" toName="a,b"/>
  <Text name="a" value="$response_a"/>
  <Text name="b" value="$response_b"/>
</View>"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -----------------------------------------------------------------------------


class Proc:
    """A child process group started by the benchmark, stopped by its own group id only."""

    def __init__(self, name: str, cmd: list[str], env: dict, cwd: Path | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.logfile = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115
        self.p = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=self.logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, timeout: float = 20.0) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
            except ProcessLookupError:
                pass
        self.logfile.close()

    def check(self) -> None:
        if self.p.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited ({self.p.returncode}); see {LOGS / self.name}.log"
            )


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes of one process group (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state; [2] the process group
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def _stat(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu_s(root_pid: int) -> float:
    """CPU seconds of a process, its live children, and the children it has reaped.

    For PostgreSQL's postmaster: every backend is its direct child, and a backend that
    exits (Label Studio opens one connection per request) is reaped by it, its CPU then
    counted in the postmaster's cutime/cstime. Deltas of this figure over a window are the
    cluster's CPU in that window, short-lived backends included.
    """
    tick = os.sysconf("SC_CLK_TCK")
    own = _stat(root_pid)
    if own is None:
        return 0.0
    total = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and int(fields[1]) == root_pid:  # [1] is the parent
                total += int(fields[11]) + int(fields[12])
    return total / tick


def wait_http(url: str, proc: Proc, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        proc.check()
        try:
            httpx.get(url, timeout=5)
            return  # it answers (any status)
        except httpx.TransportError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def run_checked(cmd: list[str], env: dict, cwd: Path | None = None, what: str = "") -> str:
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{what or cmd[0]} failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return r.stdout


def api(method: str, url: str, token: str, body=None, timeout: float = 600.0):
    r = httpx.request(
        method, url, json=body, headers={"Authorization": f"Token {token}"}, timeout=timeout
    )
    if r.status_code >= 400:
        raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:1000]}")
    return r.json() if r.content else None


# --- PostgreSQL ------------------------------------------------------------------------------


def pg_connect(dbname: str):
    import psycopg

    return psycopg.connect(f"{pg_url()}/{dbname}", autocommit=True)


class PrivatePostgres:
    """The benchmark's own PostgreSQL cluster (``var/serving/pgdata``, default settings of
    ``initdb``), so that its CPU, read from /proc, is the two systems' and nobody else's.

    Created on first use with the machine's PostgreSQL binaries (as the ``postgres`` user when
    run as root), started for the run and stopped after it. The machine's own cluster is
    never touched.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = VAR / "pgdata"
        self.log = LOGS / "postgres.log"
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = bins[-1].parent

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "PG_VERSION").exists():
            log(f"postgres: initdb {self.dir} (first run)")
            self.dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.dir, "postgres", "postgres")
            subprocess.run(
                self._as_owner([str(self.bin / "initdb"), "-D", str(self.dir), "-U", "postgres",
                                "--auth=trust", "-E", "UTF8"]),
                check=True, capture_output=True,
            )  # fmt: skip
        if os.geteuid() == 0:
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        self.stop()  # one left running by an interrupted run (ours: var/serving/pgdata)
        subprocess.run(
            self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log),
                            "-w", "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k /tmp",
                            "start"]),
            check=True, capture_output=True,
        )  # fmt: skip
        log(f"postgres: private cluster up on :{self.port}")

    def stop(self) -> None:
        subprocess.run(
            self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )  # fmt: skip

    @property
    def postmaster_pid(self) -> int:
        return int((self.dir / "postmaster.pid").read_text().split()[0])

    def cpu_s(self) -> float:
        return tree_cpu_s(self.postmaster_pid)


_dropped: set[str] = set()


def ensure_database(name: str, fresh: bool) -> None:
    """Create the database if missing; with ``fresh``, drop it first (once per run: the two
    Label Studio servers share one)."""
    with pg_connect("postgres") as conn:
        if fresh and name not in _dropped:
            _dropped.add(name)
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


# --- the two systems ------------------------------------------------------------------------


def gunicorn_args(port: int, workers: int, threads: int) -> list[str]:
    return [
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--worker-class", "gthread",
        "--threads", str(threads),
        "--keep-alive", "75",
        "--backlog", "2048",
        "--timeout", "120",
        "--log-level", "warning",
    ]  # fmt: skip


class Ours:
    name = "ours"

    def __init__(self, args) -> None:
        self.args = args
        self.port = args.port_ours
        self.db = args.db_ours
        self.procs: list[Proc] = []
        var_dir = VAR / "ours-var"
        var_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings",
            "DATABASE_URL": f"{pg_url()}/{self.db}",
            "CELERY_BROKER_URL": args.redis,
            "CACHE_URL": args.redis,
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "VAR_DIR": str(var_dir),
            "LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONPATH": str(ROOT),
        }

    def start(self) -> None:
        ensure_database(self.db, self.args.fresh)
        log(f"ours: migrate {self.db}")
        run_checked([str(VENV_PY), "manage.py", "migrate", "-v", "0"], self.env, ROOT, "migrate")
        gunicorn = str(ROOT / ".venv/bin/gunicorn")
        self.procs.append(
            Proc(
                "ours-gunicorn",
                [gunicorn, "rlhf_platform.wsgi:application"]
                + gunicorn_args(self.port, self.args.workers, self.args.threads)
                + self.args.ours_gunicorn_extra.split(),
                self.env,
                ROOT,
            )
        )
        self.procs.append(
            Proc(
                "ours-celery",
                [
                    str(ROOT / ".venv/bin/celery"), "-A", "rlhf_platform", "worker", "--beat",
                    "-Q", "default,gpu,judge", "--concurrency", "1", "--loglevel", "WARNING",
                    "--schedule", str(VAR / "ours-var" / "celerybeat-schedule"),
                ],
                self.env,
                ROOT,
            )
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.port}/api/v1/campaigns/", self.procs[0])
        log(f"ours: gunicorn up on :{self.port}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def prepare(self, n: int, comparisons: int, overlap: int, tag: str) -> tuple[int, list[str]]:
        out = run_checked(
            [
                str(VENV_PY), "-m", "bench.serving.ours_setup", "--annotators", str(n),
                "--comparisons", str(comparisons), "--overlap", str(overlap),
                "--name", f"bench-serving {tag} N={n}",
            ],
            self.env,
            ROOT,
            "ours_setup",
        )  # fmt: skip
        data = json.loads(out)
        return data["campaign_id"], data["tokens"]

    def adapter(self, target: int) -> load.Adapter:
        return load.ours_adapter(target)

    @property
    def web_pgid(self) -> int:
        return self.procs[0].p.pid

    def check(self, target: int, acked: list[int]) -> dict:
        with pg_connect(self.db) as conn, conn.cursor() as cur:
            return integrity.check_ours(cur, target, acked)


class LabelStudio:
    """Label Studio served by uWSGI as its Docker image does (``server="uwsgi"``), or by
    gunicorn in our layout (``server="gunicorn"``)."""

    def __init__(self, args, server: str = "uwsgi") -> None:
        self.args = args
        self.server = server
        self.name = "label-studio" if server == "uwsgi" else "label-studio-gunicorn"
        self.keep_alive = server != "uwsgi"  # see client.Connection
        self.port = args.port_ls if server == "uwsgi" else args.port_ls + 1
        self.db = args.db_ls
        self.procs: list[Proc] = []
        self.py = LS_VENV / "bin" / "python"
        data_dir = VAR / "ls-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")
        }
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "core.settings.label_studio",
                "DJANGO_DB": "default",
                "POSTGRE_NAME": self.db,
                "POSTGRE_USER": "postgres",
                "POSTGRE_PASSWORD": "",
                "POSTGRE_HOST": PG_HOST,
                "POSTGRE_PORT": str(PG_PORT),
                "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
                "DEBUG": "false",
                "LOG_LEVEL": "WARNING",
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "COLLECT_ANALYTICS": "false",
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
            }
        )

    def install(self) -> None:
        marker = LS_VENV / f".installed-{LS_VERSION}-uwsgi-{UWSGI_VERSION}"
        if marker.exists():
            return
        log(
            f"label-studio: installing label-studio=={LS_VERSION}, uwsgi=={UWSGI_VERSION} "
            f"(compiled: needs gcc and Python headers) into {LS_VENV} (first run)"
        )
        if not self.py.exists():
            subprocess.run(["python3.11", "-m", "venv", str(LS_VENV)], check=True)
        subprocess.run(
            [str(self.py), "-m", "pip", "install", "-q", f"label-studio=={LS_VERSION}",
             f"gunicorn=={GUNICORN_VERSION}", f"uwsgi=={UWSGI_VERSION}"],
            check=True,
        )  # fmt: skip
        marker.touch()

    def uwsgi_ini(self, pkg: Path) -> Path:
        """Label Studio's ``deploy/uwsgi.ini`` (1.23), less its container paths, stats server
        and JSON log format: 4 processes of 1 thread on this 2-core machine (its default is
        2 per core), lazy apps, thunder lock, harakiri 120 s, request logging off."""
        ini = VAR / "ls-uwsgi.ini"
        ini.write_text(
            "\n".join(
                [
                    "[uwsgi]",
                    f"chdir = {pkg}",
                    f"http = 127.0.0.1:{self.port}",
                    "module = core.wsgi:application",
                    "master = true",
                    "cheaper = true",
                    "single-interpreter = true",
                    f"processes = {self.args.ls_processes}",
                    "threads = 1",
                    "vacuum = true",
                    "die-on-term = true",
                    "buffer-size = 65535",
                    "http-timeout = 300",
                    "need-app = true",
                    "env = APP_WEBSERVER=uwsgi",
                    "ignore-sigpipe = true",
                    "ignore-write-errors = true",
                    "disable-write-exception = true",
                    "harakiri = 120",
                    "post-buffering = 4096",
                    "disable-logging = true",
                    "log-5xx = true",
                    "enable-threads = true",
                    "thunder-lock = true",
                    "lazy-apps = true",
                    "max-requests = 5000",
                    "reload-on-rss = 2048",
                    "worker-reload-mercy = 300",
                    "",
                ]
            )
        )
        return ini

    @property
    def pkg_dir(self) -> Path:
        out = subprocess.run(
            [str(self.py), "-c", "import label_studio, os; print(os.path.dirname(label_studio.__file__))"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return Path(out.stdout.strip())

    def start(self) -> None:
        self.install()
        pkg = self.pkg_dir
        self.env["PYTHONPATH"] = str(pkg)
        ensure_database(self.db, self.args.fresh)
        log(f"label-studio: migrate {self.db}")
        run_checked([str(self.py), "manage.py", "migrate", "-v", "0"], self.env, pkg, "LS migrate")
        out = run_checked(
            [
                str(self.py),
                str(ROOT / "bench/serving/ls_setup.py"),
                "--annotators",
                str(max(sc["n"] for sc in self.args.scenarios)),
            ],
            self.env,
            pkg,
            "ls_setup",
        )
        data = json.loads(out)
        self.owner_token, self.tokens = data["owner_token"], data["tokens"]
        if self.server == "uwsgi":
            cmd = [str(LS_VENV / "bin" / "uwsgi"), "--ini", str(self.uwsgi_ini(pkg))]
        else:
            cmd = [str(LS_VENV / "bin" / "gunicorn"), "core.wsgi:application"]
            cmd += gunicorn_args(self.port, self.args.workers, self.args.threads)
        self.procs.append(Proc(f"ls-{self.server}", cmd, self.env, pkg))
        wait_http(f"http://127.0.0.1:{self.port}/api/version", self.procs[0], timeout=180)
        log(f"{self.name}: {self.server} up on :{self.port}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def prepare(self, n: int, comparisons: int, overlap: int, tag: str) -> tuple[int, list[str]]:
        base = f"http://127.0.0.1:{self.port}/api"
        project = api(
            "POST",
            f"{base}/projects/",
            self.owner_token,
            {
                "title": f"bench-serving {tag} N={n}"[:50],
                "label_config": PAIRWISE_CONFIG,
                "maximum_annotations": overlap,
                "overlap_cohort_percentage": 100,
                "sampling": "Sequential sampling",
                "show_skip_button": False,
            },
        )
        from bench.serving.ours_setup import pairs

        tasks = [{"data": p} for p in pairs(comparisons)]
        result = api("POST", f"{base}/projects/{project['id']}/import", self.owner_token, tasks)
        if result.get("task_count") != comparisons:
            raise RuntimeError(f"Label Studio imported {result!r}, not {comparisons} tasks")
        return project["id"], self.tokens[:n]

    def adapter(self, target: int) -> load.Adapter:
        return load.ls_adapter(target)

    @property
    def web_pgid(self) -> int:
        return self.procs[0].p.pid

    def check(self, target: int, acked: list[int]) -> dict:
        with pg_connect(self.db) as conn, conn.cursor() as cur:
            return integrity.check_label_studio(cur, target, acked)


# --- one measurement -------------------------------------------------------------------------


class Profiler:
    """py-spy (installed into var/serving/tools on first use) sampling our gunicorn workers
    during one measured window, only the thread that holds the GIL (``--gil``: Python's own
    CPU; without it, threads blocked on PostgreSQL in psycopg's waits dominate the samples);
    the stacks are summarized by where their innermost frame's code lives
    (bench.serving.inproc.CATEGORIES)."""

    def __init__(self) -> None:
        self.exe = TOOLS / "bin" / "py-spy"
        if not self.exe.exists():
            log(f"installing py-spy=={PY_SPY_VERSION} into {TOOLS} (first use of --profile)")
            subprocess.run(
                [str(VENV_PY), "-m", "pip", "install", "-q", "--target", str(TOOLS),
                 f"py-spy=={PY_SPY_VERSION}"],
                check=True,
            )  # fmt: skip

    def start(self, pid: int, seconds: float, out: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [str(self.exe), "record", "--pid", str(pid), "--subprocesses", "--gil",
             "--duration", str(int(seconds)), "--rate", "200", "--format", "raw",
             "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    @staticmethod
    def summarize(raw: Path) -> dict:
        """Samples (of the GIL holder; no ``--idle``) by the innermost frame's code."""
        from bench.serving.inproc import category

        by_cat: dict[str, int] = {}
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            leaf = stack.split(";")[-1]  # "function (path/file.py:line)"
            path = leaf.rpartition(" (")[2].rsplit(":", 1)[0]
            key = (
                category("/" + path)
                if "/" in path
                else "Python stdlib: datetime, uuid, random, ..."
            )
            by_cat[key] = by_cat.get(key, 0) + int(count)
            total += int(count)
        return {
            "samples": total,
            "share": {
                k: round(v / total, 3) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])
            },
        }


def measure(system, scenario: dict, target: int, tokens: list[str], args, pg) -> dict:
    n, think = scenario["n"], scenario["think"]
    log(
        f"{system.name} {scenario['key']}: target {target}, {args.comparisons} items x overlap {args.overlap}"
    )
    load_before = os.getloadavg()[0]
    pgid = system.web_pgid

    def probe() -> tuple[float, float | None]:
        return group_cpu_s(pgid), (pg.cpu_s() if pg is not None else None)

    spy = None
    if args.profile and system.name == "ours" and think == 0 and n == max(args.n):
        raw_path = VAR / f"py-spy-{scenario['key'].replace(' ', '_')}.txt"
        spy = (Profiler(), raw_path)
    started = {}

    def on_window():
        if spy is not None and not started:
            started["p"] = spy[0].start(system.procs[0].p.pid, args.duration, spy[1])
        return probe()

    raw = load.run_load(
        system.adapter(target),
        "127.0.0.1",
        system.port,
        tokens,
        args.warmup,
        args.duration,
        label=f"{system.name} {scenario['key']}",
        progress=not args.no_progress,
        think_s=think,
        on_window=on_window,
        keep_alive=getattr(system, "keep_alive", True),
    )
    rec, warm_end, stop_at = raw["recorder"], raw["warm_end"], raw["stop_at"]
    window = [r for r in rec.requests if warm_end <= r[1] < stop_at]
    out: dict = {
        "system": system.name,
        "scenario": scenario["key"],
        "n": n,
        "think_s": think,
        "target_id": target,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
    for endpoint in ("next", "submit"):
        rows = [r for r in window if r[0] == endpoint]
        out[endpoint] = summarize_ms([t1 - t0 for _, t0, t1, o in rows if o in ("ok", "nothing")])
        out[endpoint]["errors"] = sum(1 for r in rows if r[3] not in ("ok", "nothing"))
        out[endpoint]["nothing_queued"] = sum(1 for r in rows if r[3] == "nothing")
    labels_in_window = sum(1 for t in rec.acked_at if warm_end <= t < stop_at)
    out["labels_per_s"] = round(labels_in_window / args.duration, 1)
    out["labels_in_window"] = labels_in_window
    out["labels_total_acked"] = len(rec.acked)
    out["errors_total"] = sum(rec.errors.values())
    out["errors_by_kind"] = rec.errors
    requests_in_window = len(window)
    out["requests_per_s"] = round(requests_in_window / args.duration, 1)
    out["client_cpu_s"] = round(raw["client_cpu_s"], 2)
    out["client_cpu_share_of_one_core"] = round(raw["client_cpu_s"] / args.duration, 3)
    out["client_cpu_us_per_request"] = (
        round(1e6 * raw["client_cpu_s"] / requests_in_window, 1) if requests_in_window else None
    )
    (web0, pg0), (web1, pg1) = raw["window_probe"]
    web_cpu = web1 - web0
    out["web_cpu_s"] = round(web_cpu, 2)
    out["web_cpu_share_of_machine"] = round(web_cpu / args.duration / (os.cpu_count() or 1), 3)
    per_label = (
        (lambda cpu: round(1000 * cpu / labels_in_window, 2))
        if labels_in_window
        else (lambda cpu: None)
    )
    out["web_cpu_ms_per_label"] = per_label(web_cpu)
    out["pg_cpu_s"] = round(pg1 - pg0, 2) if pg0 is not None else None
    out["pg_cpu_ms_per_label"] = per_label(pg1 - pg0) if pg0 is not None else None
    out["total_cpu_ms_per_label"] = (
        round(out["web_cpu_ms_per_label"] + out["pg_cpu_ms_per_label"], 2)
        if out["web_cpu_ms_per_label"] is not None and out["pg_cpu_ms_per_label"] is not None
        else None
    )
    if spy is not None and "p" in started:
        try:
            started["p"].wait(timeout=60)
            out["py_spy"] = Profiler.summarize(spy[1])
            out["py_spy"]["raw"] = str(spy[1].relative_to(ROOT))
        except (subprocess.TimeoutExpired, OSError) as exc:
            out["py_spy"] = {"error": str(exc)}
    time.sleep(0.5)  # let in-flight transactions of dropped connections settle
    out["integrity"] = system.check(target, rec.acked)
    i = out["integrity"]
    log(
        f"{system.name} {scenario['key']}: {out['labels_per_s']} labels/s, CPU/label web "
        f"{out['web_cpu_ms_per_label']} + PG {out['pg_cpu_ms_per_label']} ms, next p99 "
        f"{out['next']['p99_ms']} ms, submit p99 {out['submit']['p99_ms']} ms, errors "
        f"{out['errors_total']}, integrity {'OK' if i['ok'] else 'FAILED'} "
        f"(acked {i['acknowledged']}, stored {i['stored']})"
    )
    return out


# --- report ----------------------------------------------------------------------------------


def _f(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(results: dict) -> str:
    rows = results["runs"]
    lines = [
        "| system | scenario | load at start | labels/s | next p50 / p99 (ms) "
        "| submit p50 / p99 (ms) | CPU ms/label: web + PG = total | errors | integrity |",
        "|---|---|---:|---:|---|---|---|---:|---|",
    ]
    for r in rows:
        i = r["integrity"]
        dup = (
            len(i["acked_twice"])
            + i["duplicate_lease"]
            + i["duplicate_idempotency_key"]
            + i["duplicate_annotator_comparison"]
        )
        checks = [
            f"acked {i['acknowledged']}, stored {i['stored']}",
            f"missing {len(i['acked_missing'])}",
            f"dup {dup}",
            f"over-overlap {i['over_overlap']}",
        ]
        if i.get("budget_exact") is not None:
            checks.append("budget exact" if i["budget_exact"] else "BUDGET WRONG")
        verdict = "OK" if i["ok"] else "FAILED"
        nq = r["next"]["nothing_queued"]
        lines.append(
            f"| {r['system']} | {r.get('scenario', r['n'])} | {_f(r['loadavg_1m_before'], 2)} | "
            f"{_f(r['labels_per_s'])} | "
            f"{_f(r['next']['p50_ms'])} / {_f(r['next']['p99_ms'])} | "
            f"{_f(r['submit']['p50_ms'])} / {_f(r['submit']['p99_ms'])} | "
            f"{_f(r.get('web_cpu_ms_per_label'))} + {_f(r.get('pg_cpu_ms_per_label'))} = "
            f"{_f(r.get('total_cpu_ms_per_label'))} | "
            f"{r['errors_total']}{f' (+{nq} empty)' if nq else ''} | "
            f"{verdict}: {', '.join(checks)} |"
        )
    ratios = results.get("ratios") or {}
    if ratios:
        others = sorted({k for v in ratios.values() for k in v["others"]})
        head = "| scenario | ours labels/s | ours CPU ms/label |"
        sep = "|---|---:|---:|"
        for o in others:
            head += f" {o} labels/s | {o} CPU ms/label | labels/s ratio | CPU ratio |"
            sep += "---:|---:|---:|---:|"
        lines += ["", head, sep]
        for key, v in ratios.items():
            row = f"| {key} | {_f(v['ours'])} | {_f(v['ours_cpu'])} |"
            for o in others:
                w = v["others"].get(o)
                if w is None:
                    row += " - | - | - | - |"
                else:
                    row += (
                        f" {_f(w['labels_per_s'])} | {_f(w['cpu'])} | "
                        f"{_f(w['ratio'], 2)}x | {_f(w['cpu_ratio'], 1)}x |"
                    )
            lines.append(row)
    return "\n".join(lines) + "\n"


def ratios(runs: list[dict]) -> dict:
    """Per scenario: ours against each other system, in labels/s and in CPU per label."""
    by = {(r["system"], r["scenario"]): r for r in runs}
    out = {}
    for (system, key), r in by.items():
        if system != "ours":
            continue
        entry = {
            "ours": r["labels_per_s"],
            "ours_cpu": r.get("total_cpu_ms_per_label"),
            "others": {},
        }
        for (other, key2), o in by.items():
            if key2 != key or other == "ours":
                continue
            cpu_o, cpu_us = o.get("total_cpu_ms_per_label"), r.get("total_cpu_ms_per_label")
            entry["others"][other] = {
                "labels_per_s": o["labels_per_s"],
                "cpu": cpu_o,
                "ratio": r["labels_per_s"] / o["labels_per_s"] if o["labels_per_s"] else None,
                "cpu_ratio": cpu_o / cpu_us if cpu_o and cpu_us else None,
            }
        out[key] = entry
    return out


def machine() -> dict:
    cpu = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="N = 1, 8, no think-time run; 2 s warm-up, 5 s measured; 600 items",
    )
    ap.add_argument(
        "--n", default=None, help="comma-separated annotator counts (default 1,8,32,64)"
    )
    ap.add_argument(
        "--think-run",
        default=None,
        help="extra scenario N:SECONDS with think time (default 32:2; 'none' for none)",
    )
    ap.add_argument(
        "--systems",
        default="ours,label-studio,label-studio-gunicorn",
        help="label-studio: uWSGI as its Docker image; label-studio-gunicorn: our layout",
    )
    ap.add_argument("--warmup", type=float, default=None, help="seconds (default 5)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds (default 20)")
    ap.add_argument("--comparisons", type=int, default=None, help="items per run (default 3000)")
    ap.add_argument("--overlap", type=int, default=3, help="labels wanted per item")
    ap.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="seconds an annotator looks at a pair before submitting in the --n scenarios "
        "(default 0: flat out), uniform in 0.5x to 1.5x",
    )
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    ap.add_argument(
        "--ours-gunicorn-extra", default="", help="more gunicorn options for ours (one string)"
    )
    ap.add_argument(
        "--ls-processes", type=int, default=4, help="Label Studio's uWSGI processes (2 per core)"
    )
    ap.add_argument(
        "--pg",
        choices=("private", "shared"),
        default="private",
        help="private: the benchmark's own PostgreSQL cluster (var/serving/pgdata), whose CPU "
        "is reported; shared: the machine's on 127.0.0.1:5432 (no PostgreSQL CPU figure)",
    )
    ap.add_argument("--pg-port", type=int, default=5499)
    ap.add_argument(
        "--profile", action="store_true", help="py-spy on our web tier at the largest N"
    )
    ap.add_argument("--port-ours", type=int, default=8111)
    ap.add_argument("--port-ls", type=int, default=8112)
    ap.add_argument("--db-ours", default="rlhf_serving")
    ap.add_argument("--db-ls", default="ls_serving")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/11")
    ap.add_argument("--fresh", action="store_true", help="drop and re-create both databases first")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", type=Path, default=VAR / "results.json")
    args = ap.parse_args(argv)
    q = args.quick
    args.n = [int(x) for x in (args.n or ("1,8" if q else "1,8,32,64")).split(",")]
    args.warmup = args.warmup if args.warmup is not None else (2.0 if q else 5.0)
    args.duration = args.duration if args.duration is not None else (5.0 if q else 20.0)
    args.comparisons = args.comparisons or (600 if q else 3000)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - {"ours", "label-studio", "label-studio-gunicorn"}
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    args.scenarios = [
        {
            "n": n,
            "think": args.think,
            "key": f"N={n}" + (f" think {args.think:g}s" if args.think else ""),
        }
        for n in args.n
    ]
    think_run = args.think_run if args.think_run is not None else ("none" if q else "32:2")
    if think_run != "none":
        n, _, secs = think_run.partition(":")
        args.scenarios.append(
            {"n": int(n), "think": float(secs), "key": f"N={int(n)} think {float(secs):g}s"}
        )
    return args


def main(argv=None) -> int:
    global PG_PORT
    args = parse_args(argv)
    VAR.mkdir(parents=True, exist_ok=True)
    tag = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m bench.serving", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "settings": {
            k: getattr(args, k)
            for k in (
                "n",
                "scenarios",
                "warmup",
                "duration",
                "comparisons",
                "overlap",
                "workers",
                "threads",
                "ls_processes",
                "pg",
            )
        }
        | {
            "label_studio_version": LS_VERSION,
            "ours": f"gunicorn gthread, {args.workers} workers x {args.threads} threads"
            + (f" {args.ours_gunicorn_extra}" if args.ours_gunicorn_extra else ""),
            "label-studio": f"uWSGI {UWSGI_VERSION}, {args.ls_processes} processes x 1 thread "
            "(its deploy/uwsgi.ini)",
            "label-studio-gunicorn": f"gunicorn gthread, {args.workers} workers x "
            f"{args.threads} threads (our layout)",
        },
        "runs": [],
        "errors": {},
    }
    pg = None
    if args.pg == "private":
        PG_PORT = args.pg_port
        pg = PrivatePostgres(args.pg_port)
        pg.start()
    kinds = {
        "ours": lambda: Ours(args),
        "label-studio": lambda: LabelStudio(args, "uwsgi"),
        "label-studio-gunicorn": lambda: LabelStudio(args, "gunicorn"),
    }
    systems = [kinds[name]() for name in args.systems]
    live, targets = [], {}
    try:
        # Both stacks are started and every campaign/project is filled before any load, so
        # no setup work runs during a measurement; the idle stacks cost next to nothing.
        for system in systems:
            try:
                system.start()
                for sc in args.scenarios:
                    log(f"{system.name}: preparing {sc['key']}")
                    targets[(system.name, sc["key"])] = system.prepare(
                        sc["n"], args.comparisons, args.overlap, f"{tag} {sc['key']}"
                    )
                live.append(system)
            except Exception as exc:  # noqa: BLE001 - reported; the other system still runs
                log(f"{system.name}: FAILED: {exc}")
                results["errors"][system.name] = str(exc)
                system.stop()
        # Interleaved, and the order alternates from one scenario to the next, so that
        # drifting background load and any warm-up effect of going first hit all alike.
        for i, sc in enumerate(args.scenarios):
            order = live if i % 2 == 0 else list(reversed(live))
            for system in order:
                try:
                    target, tokens = targets[(system.name, sc["key"])]
                    results["runs"].append(measure(system, sc, target, tokens, args, pg))
                except Exception as exc:  # noqa: BLE001
                    log(f"{system.name} {sc['key']}: FAILED: {exc}")
                    results["errors"][f"{system.name} {sc['key']}"] = str(exc)
    finally:
        for system in systems:
            system.stop()
        if pg is not None:
            pg.stop()
    results["ratios"] = ratios(results["runs"])
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    ok = not results["errors"] and all(r["integrity"]["ok"] for r in results["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
