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
LS_VENV = VAR / "ls-venv"
PG = "postgres://postgres@127.0.0.1:5432"
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

    return psycopg.connect(f"{PG}/{dbname}", autocommit=True)


def ensure_database(name: str, fresh: bool) -> None:
    with pg_connect("postgres") as conn:
        if fresh:
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
            "DATABASE_URL": f"{PG}/{self.db}",
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
                + gunicorn_args(self.port, self.args.workers, self.args.threads),
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
    name = "label-studio"

    def __init__(self, args) -> None:
        self.args = args
        self.port = args.port_ls
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
                "POSTGRE_HOST": "127.0.0.1",
                "POSTGRE_PORT": "5432",
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
        marker = LS_VENV / f".installed-{LS_VERSION}"
        if marker.exists():
            return
        log(f"label-studio: installing label-studio=={LS_VERSION} into {LS_VENV} (first run)")
        if not self.py.exists():
            subprocess.run(["python3.11", "-m", "venv", str(LS_VENV)], check=True)
        subprocess.run(
            [str(self.py), "-m", "pip", "install", "-q", f"label-studio=={LS_VERSION}",
             f"gunicorn=={GUNICORN_VERSION}"],
            check=True,
        )  # fmt: skip
        marker.touch()

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
                str(max(self.args.n)),
            ],
            self.env,
            pkg,
            "ls_setup",
        )
        data = json.loads(out)
        self.owner_token, self.tokens = data["owner_token"], data["tokens"]
        gunicorn = str(LS_VENV / "bin" / "gunicorn")
        self.procs.append(
            Proc(
                "ls-gunicorn",
                [gunicorn, "core.wsgi:application"]
                + gunicorn_args(self.port, self.args.workers, self.args.threads),
                self.env,
                pkg,
            )
        )
        wait_http(f"http://127.0.0.1:{self.port}/api/version", self.procs[0], timeout=180)
        log(f"label-studio: gunicorn up on :{self.port}")

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


def measure(system, n: int, target: int, tokens: list[str], args) -> dict:
    log(f"{system.name} N={n}: target {target}, {args.comparisons} items x overlap {args.overlap}")
    load_before = os.getloadavg()[0]
    pgid = system.web_pgid
    raw = load.run_load(
        system.adapter(target),
        "127.0.0.1",
        system.port,
        tokens,
        args.warmup,
        args.duration,
        label=f"{system.name} N={n}",
        progress=not args.no_progress,
        think_s=args.think,
        on_window=(lambda: group_cpu_s(pgid)),
    )
    rec, warm_end, stop_at = raw["recorder"], raw["warm_end"], raw["stop_at"]
    window = [r for r in rec.requests if warm_end <= r[1] < stop_at]
    out: dict = {
        "system": system.name,
        "n": n,
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
    web_cpu = raw["window_probe"][1] - raw["window_probe"][0]
    out["web_cpu_s"] = round(web_cpu, 2)
    out["web_cpu_share_of_machine"] = round(web_cpu / args.duration / (os.cpu_count() or 1), 3)
    out["web_cpu_ms_per_label"] = (
        round(1000 * web_cpu / labels_in_window, 2) if labels_in_window else None
    )
    time.sleep(0.5)  # let in-flight transactions of dropped connections settle
    out["integrity"] = system.check(target, rec.acked)
    i = out["integrity"]
    log(
        f"{system.name} N={n}: {out['labels_per_s']} labels/s, next p99 {out['next']['p99_ms']} ms, "
        f"submit p99 {out['submit']['p99_ms']} ms, errors {out['errors_total']}, "
        f"integrity {'OK' if i['ok'] else 'FAILED'} (acked {i['acknowledged']}, stored {i['stored']})"
    )
    return out


# --- report ----------------------------------------------------------------------------------


def _f(v, nd=1):
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(results: dict) -> str:
    rows = results["runs"]
    lines = [
        "| system | N | labels/s | next p50 / p95 / p99 (ms) | submit p50 / p95 / p99 (ms) "
        "| errors | web CPU ms/label | integrity |",
        "|---|---:|---:|---|---|---:|---:|---|",
    ]
    for r in rows:
        i = r["integrity"]
        checks = [
            f"acked {i['acknowledged']}, stored {i['stored']}",
            f"missing {len(i['acked_missing'])}",
            f"dup {len(i['acked_twice']) + i['duplicate_lease'] + i['duplicate_idempotency_key'] + i['duplicate_annotator_comparison']}",
            f"over-overlap {i['over_overlap']}",
        ]
        if i.get("budget_exact") is not None:
            checks.append("budget exact" if i["budget_exact"] else "BUDGET WRONG")
        verdict = "OK" if i["ok"] else "FAILED"
        nq = r["next"]["nothing_queued"]
        lines.append(
            f"| {r['system']} | {r['n']} | {_f(r['labels_per_s'])} | "
            f"{_f(r['next']['p50_ms'])} / {_f(r['next']['p95_ms'])} / {_f(r['next']['p99_ms'])} | "
            f"{_f(r['submit']['p50_ms'])} / {_f(r['submit']['p95_ms'])} / {_f(r['submit']['p99_ms'])} | "
            f"{r['errors_total']}{f' (+{nq} empty)' if nq else ''} | "
            f"{_f(r.get('web_cpu_ms_per_label'))} | {verdict}: {', '.join(checks)} |"
        )
    ratios = results.get("ratios") or {}
    if ratios:
        lines += [
            "",
            "| N | ours labels/s | Label Studio labels/s | ours / LS |",
            "|---:|---:|---:|---:|",
        ]
        for n, v in ratios.items():
            lines.append(
                f"| {n} | {_f(v['ours'])} | {_f(v['label-studio'])} | {_f(v['ratio'], 2)}x |"
            )
    return "\n".join(lines) + "\n"


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
        "--quick", action="store_true", help="N = 1, 8; 2 s warm-up, 5 s measured; 600 items"
    )
    ap.add_argument(
        "--n", default=None, help="comma-separated annotator counts (default 1,8,32,64)"
    )
    ap.add_argument("--systems", default="ours,label-studio")
    ap.add_argument("--warmup", type=float, default=None, help="seconds (default 10)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds (default 30)")
    ap.add_argument("--comparisons", type=int, default=None, help="items per run (default 3000)")
    ap.add_argument("--overlap", type=int, default=3, help="labels wanted per item")
    ap.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="seconds an annotator looks at a pair before submitting (default 0: flat out)",
    )
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
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
    args.warmup = args.warmup if args.warmup is not None else (2.0 if q else 10.0)
    args.duration = args.duration if args.duration is not None else (5.0 if q else 30.0)
    args.comparisons = args.comparisons or (600 if q else 3000)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    return args


def main(argv=None) -> int:
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
                "warmup",
                "duration",
                "comparisons",
                "overlap",
                "think",
                "workers",
                "threads",
            )
        }
        | {
            "label_studio_version": LS_VERSION,
            "gunicorn": f"gthread, {args.workers} workers x {args.threads} threads",
        },
        "runs": [],
        "errors": {},
    }
    kinds = {"ours": Ours, "label-studio": LabelStudio}
    systems = [kinds[name](args) for name in args.systems]
    live, targets = [], {}
    try:
        # Both stacks are started and every campaign/project is filled before any load, so
        # no setup work runs during a measurement; the idle stack costs next to nothing.
        for system in systems:
            try:
                system.start()
                for n in args.n:
                    log(f"{system.name}: preparing N={n}")
                    targets[(system.name, n)] = system.prepare(
                        n, args.comparisons, args.overlap, tag
                    )
                live.append(system)
            except Exception as exc:  # noqa: BLE001 - reported; the other system still runs
                log(f"{system.name}: FAILED: {exc}")
                results["errors"][system.name] = str(exc)
                system.stop()
        # Interleaved (for each N, every system in turn): background load drifts alike.
        for n in args.n:
            for system in list(live):
                try:
                    target, tokens = targets[(system.name, n)]
                    results["runs"].append(measure(system, n, target, tokens, args))
                except Exception as exc:  # noqa: BLE001
                    log(f"{system.name} N={n}: FAILED: {exc}")
                    results["errors"][f"{system.name} N={n}"] = str(exc)
    finally:
        for system in systems:
            system.stop()
    by = {(r["system"], r["n"]): r["labels_per_s"] for r in results["runs"]}
    results["ratios"] = {
        str(n): {
            "ours": by[("ours", n)],
            "label-studio": by[("label-studio", n)],
            "ratio": by[("ours", n)] / by[("label-studio", n)] if by[("label-studio", n)] else None,
        }
        for n in args.n
        if ("ours", n) in by and ("label-studio", n) in by
    }
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
