"""The soak: load plus faults against a private, production-like stack, then the checks.

One run:

1. a private PostgreSQL cluster and a private Redis on free ports under a temporary directory
   (see ``services.py``); ``migrate``; gunicorn (threads) and ONE Celery worker with embedded
   beat on the queues default, gpu and judge, as in ``Procfile.demo`` but on PostgreSQL and
   Redis;
2. a human campaign of imported pairs (overlap ``--overlap``) labeled by ``--annotators``
   simulated annotators over HTTP (``annotators.py``), and a judge campaign (oracle judge,
   the tiny policy backend, so it is CPU-cheap) running rounds on the worker the whole time;
3. at seeded random moments, one fault at a time, cycling through the kinds in a shuffled
   order so that every kind comes once before any comes twice: ``worker`` (SIGKILL of the
   worker's process group, i.e. the worker, its pool and beat, then a restart), ``redis``
   (SIGKILL of redis-server, down a few seconds, started again empty: every queued message
   is lost) and ``postgres`` (``pg_ctl stop -m fast`` or ``-m immediate``, a crash, down a
   few seconds, started again);
4. the clients stop (each finishes the answer it is submitting), the soak waits for the
   lease sweeper and for rounds to move after the last fault, and checks the database
   against what the clients were told.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.soak.annotators import Annotator, Shared
from bench.soak.services import (
    ROOT,
    Managed,
    PrivatePostgres,
    PrivateRedis,
    SoakSetupError,
    free_port,
    python_argv,
    wait_port,
)

FAULT_KINDS = ("worker", "redis", "postgres")
DB_NAME = "rlhf_soak"


@dataclass
class Config:
    minutes: float = 5.0
    seed: int = 1
    annotators: int = 32
    comparisons: int | None = None  # default: enough for the run (see comparisons_for)
    overlap: int = 3
    faults: tuple[str, ...] = FAULT_KINDS
    fault_every: tuple[float, float] = (20.0, 60.0)
    first_fault_after: float = 15.0
    recovery_margin: float = 20.0  # no fault starts in the run's last seconds
    down: tuple[float, float] = (2.0, 6.0)  # how long Redis / PostgreSQL stay down
    worker_down: tuple[float, float] = (1.0, 3.0)
    think: tuple[float, float] = (0.3, 1.0)
    walk_away: float = 0.01
    web_workers: int = 2
    web_threads: int = 4
    worker_concurrency: int = 2
    lease_seconds: int = 15
    lease_sweep_seconds: int = 3
    round_sweep_seconds: int = 3
    claim_stale_seconds: int = 15
    visibility_timeout: int = 60
    stuck_after: float = 90.0  # a round that has not moved for this long after the faults
    out: Path = ROOT / "var" / "soak"
    keep: bool = False  # keep the temporary directory (logs, data) for a post-mortem
    progress: bool = True

    @property
    def duration(self) -> float:
        return self.minutes * 60

    def comparisons_for(self) -> int:
        if self.comparisons:
            return self.comparisons
        # The annotators cannot store more than ~one label per think time each; with a
        # margin, so the queue never runs dry in the run.
        mean_think = sum(self.think) / 2 + 0.05
        labels = self.annotators / mean_think * self.duration * 1.3
        return max(200, int(labels / self.overlap) + 1)


@dataclass
class Fault:
    kind: str
    start: float
    end: float  # the service is back (the process started again)
    detail: str = ""
    label_recovery_s: float | None = None
    round_recovery_s: float | None = None


@dataclass
class Outcome:
    config: dict
    started_at: str
    machine: dict
    faults: list[Fault] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    errors_by_kind: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    setup_s: float = 0.0
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


@contextmanager
def consistent_snapshot() -> Iterator[None]:
    """A read-only REPEATABLE READ transaction on Django's default database: every query
    inside it sees the same committed state, whatever other connections commit meanwhile."""
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _machine() -> dict:
    import platform

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "load_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }


class Soak:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.tmp: Path | None = None
        self.pg: PrivatePostgres | None = None
        self.redis: PrivateRedis | None = None
        self.web: Managed | None = None
        self.worker: Managed | None = None
        self.shared: Shared | None = None
        self.clients: list[Annotator] = []
        self.outcome = Outcome(
            config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            machine=_machine(),
        )
        self.t0_wall = 0.0
        self.monitor_samples: list[dict] = []
        self._monitor_stop = threading.Event()
        self.unexpected_exits: list[str] = []

    # ------------------------------------------------------------------ logging, progress

    def say(self, msg: str) -> None:
        t = self.shared.now() if self.shared else 0.0
        sys.stdout.write(
            f"\r\033[K[soak {t:6.1f}s] {msg}\n" if self._tty() else f"[soak {t:6.1f}s] {msg}\n"
        )
        sys.stdout.flush()

    def _tty(self) -> bool:
        return self.cfg.progress and sys.stdout.isatty()

    def _progress(self, last: list[float]) -> None:
        if not self.cfg.progress:
            return
        t = self.shared.now()
        with self.shared.lock:
            acked = len({a.label_id for a in self.shared.acks})
            errors = len(self.shared.events)
        sample = self.monitor_samples[-1] if self.monitor_samples else {}
        total = self.cfg.duration
        done = min(1.0, t / total)
        bar = "#" * int(done * 24) + "-" * (24 - int(done * 24))
        line = (
            f"[{bar}] {t:5.0f}/{total:.0f}s  labels acked {acked}  client errors {errors}  "
            f"rounds done {sample.get('rounds_done', '?')}  faults {len(self.outcome.faults)}"
        )
        if self._tty():
            sys.stdout.write("\r\033[K" + line)
            sys.stdout.flush()
        elif t - last[0] >= 10:
            print(line, flush=True)
            last[0] = t

    # ------------------------------------------------------------------ setup

    def _env(self) -> dict[str, str]:
        c = self.cfg
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings",
            "DATABASE_URL": self.pg.url(DB_NAME),
            "CELERY_BROKER_URL": self.redis.url(0),
            "ARTIFACT_ROOT": str(self.tmp / "artifacts"),
            "VAR_DIR": str(self.tmp / "var"),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LEASE_SECONDS": str(c.lease_seconds),
            "LEASE_SWEEP_SECONDS": str(c.lease_sweep_seconds),
            "ROUND_SWEEP_SECONDS": str(c.round_sweep_seconds),
            "ROUND_CLAIM_STALE_SECONDS": str(c.claim_stale_seconds),
            "CELERY_VISIBILITY_TIMEOUT": str(c.visibility_timeout),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
        }

    def setup(self) -> None:
        c = self.cfg
        started = time.monotonic()
        self.tmp = Path(tempfile.mkdtemp(prefix="rlhf-soak-"))
        # The postgres user must pass through to its data directory (search only, no read).
        os.chmod(self.tmp, 0o711)  # noqa: S103
        (self.tmp / "var").mkdir()
        (self.tmp / "logs").mkdir()
        self.say(f"private servers under {self.tmp}")
        self.pg = PrivatePostgres(self.tmp / "pg", free_port())
        self.pg.init()
        self.pg.start()
        self.pg.psql(f"CREATE DATABASE {DB_NAME}")
        self.redis = PrivateRedis(self.tmp / "redis", free_port())
        self.redis.start()
        self.say(f"PostgreSQL on :{self.pg.port}, Redis on :{self.redis.port}")
        env = self._env()
        os.environ.update({k: v for k, v in env.items() if k not in ("PYTHONUNBUFFERED",)})
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        web_port = free_port()
        self.base_url = f"http://127.0.0.1:{web_port}"
        logs = self.tmp / "logs"
        self.web = Managed(
            "web",
            python_argv(
                "-m",
                "gunicorn",
                "rlhf_platform.wsgi:application",
                "--bind",
                f"127.0.0.1:{web_port}",
                "--workers",
                str(c.web_workers),
                "--threads",
                str(c.web_threads),
                "--timeout",
                "60",
                "--graceful-timeout",
                "5",
                "--keep-alive",
                "5",
            ),
            env,
            logs / "web.log",
        )
        self.worker = Managed(
            "worker",
            python_argv(
                "-m",
                "celery",
                "-A",
                "rlhf_platform",
                "worker",
                "-B",
                "--schedule",
                str(self.tmp / "var" / "celerybeat-schedule"),
                "-Q",
                "default,gpu,judge",
                "--concurrency",
                str(c.worker_concurrency),
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ),
            env,
            logs / "worker.log",
        )
        self.web.start()
        self.worker.start()
        self.data = self._create_data()
        self.say(
            f"human campaign {self.data['human_id']}: {self.data['comparisons']} comparisons x "
            f"{c.overlap}; judge campaign {self.data['judge_id']}; {c.annotators} annotators"
        )
        wait_port(web_port, 60, proc=self.web.proc)
        self._wait_worker_ready(self.worker, 120)
        self._warm_web(next(iter(self.data["tokens"].values())))
        self.outcome.setup_s = round(time.monotonic() - started, 1)
        self.say(
            f"web {self.base_url} (gunicorn {c.web_workers}x{c.web_threads} threads), worker ready"
        )

    def _warm_web(self, token: str) -> None:
        """Each gunicorn worker imports the URL conf (and the ML code behind it) on its first
        request, which takes seconds here: do that before the clients start, so that their
        first requests do not time out."""
        from concurrent.futures import ThreadPoolExecutor

        import requests

        url = f"{self.base_url}/api/v1/campaigns/{self.data['human_id']}/progress/"
        headers = {"Authorization": f"Token {token}"}

        def one(_: int) -> float:
            t = time.monotonic()
            requests.get(url, headers=headers, timeout=120).raise_for_status()
            return time.monotonic() - t

        n = self.cfg.web_workers * self.cfg.web_threads
        with ThreadPoolExecutor(n) as pool:
            for _ in range(10):
                if max(pool.map(one, range(n))) < 1.0:
                    return

    def _wait_worker_ready(self, worker: Managed, timeout: float) -> None:
        """Wait for the ``ready.`` line of the worker's latest start."""
        deadline = time.monotonic() + timeout
        while True:
            if not worker.alive():
                raise SoakSetupError(f"the worker exited:\n{worker.tail()}")
            if " ready." in worker.output_since_start():
                return
            if time.monotonic() > deadline:
                raise SoakSetupError(
                    f"the worker was not ready after {timeout:.0f} s:\n{worker.tail()}"
                )
            time.sleep(0.2)

    def _create_data(self) -> dict:
        from rest_framework.authtoken.models import Token

        from rlhf_platform.accounts.models import Role, User
        from rlhf_platform.campaigns.services import (
            campaign_add_member,
            campaign_create,
            campaign_set_state,
            comparisons_import_pairs,
            prompts_import,
        )

        c = self.cfg
        researcher = User.objects.create_user(
            username="soak-researcher", password=None, role=Role.RESEARCHER
        )
        human = campaign_create(
            owner=researcher, name="soak: human pairs", labels_per_comparison=c.overlap
        )
        tokens = {}
        for i in range(c.annotators):
            user = User.objects.create_user(username=f"soak-{i:02d}", password=None)
            campaign_add_member(campaign=human, user=user)
            tokens[user.username] = Token.objects.create(user=user).key
        n = c.comparisons_for()
        for start in range(0, n, 500):
            comparisons_import_pairs(
                campaign=human,
                pairs=[
                    {
                        "prompt": f"Soak prompt {i}: how would you explain topic {i % 97}?",
                        "response_a": f"A short answer {i} about topic {i % 97}.",
                        "response_b": f"A longer, more careful answer {i} about topic {i % 97}.",
                        "priority": float(i % 7),
                    }
                    for i in range(start, min(n, start + 500))
                ],
            )
        campaign_set_state(campaign=human, action="start")

        judge = campaign_create(
            owner=researcher,
            name="soak: judge rounds",
            algorithm="online",
            acquisition_rule="uniform",
            feedback_mode="judge",
            max_rounds=100000,
            prompts_per_round=4,
            responses_per_prompt=3,
            eval_every=2,
            seed=c.seed,
            policy_config={
                "backend": "tiny",
                "max_new_tokens": 8,
                "policy_steps": 1,
                "eval_prompts": 3,
            },
            reward_config={
                "num_particles": 8,
                "point_hidden": [16, 16],
                "prior_hidden": [8],
                "diff_hidden": [8],
            },
            judge_config={"kind": "oracle", "encoder": "hashing", "temperature": 0.5},
        )
        train = [f"Soak round prompt {i}: give one tip about topic {i}." for i in range(24)]
        evals = ["What is 2 + 2?", "Name a primary colour.", "Why is the sky blue?"]
        lines = [json.dumps({"prompt": p}) for p in train] + [
            json.dumps({"prompt": p, "split": "eval", "reference": "ok"}) for p in evals
        ]
        prompts_import(campaign=judge, content="\n".join(lines), fmt="jsonl")
        campaign_set_state(campaign=judge, action="start")  # its first round opens on the worker
        return {
            "human_id": human.pk,
            "judge_id": judge.pk,
            "comparisons": n,
            "tokens": tokens,
        }

    # ------------------------------------------------------------------ the run

    def _monitor(self) -> None:
        from django.db import connection
        from django.utils import timezone

        from rlhf_platform.labeling.models import Label, Lease, LeaseState
        from rlhf_platform.rounds.models import Round, RoundState

        grace = dt.timedelta(seconds=self.cfg.lease_sweep_seconds * 2 + 5)
        while not self._monitor_stop.wait(1.0):
            t = self.shared.now() if self.shared else 0.0
            try:
                now = timezone.now()
                sample = {
                    "t": round(t, 1),
                    "labels": Label.objects.filter(campaign_id=self.data["human_id"]).count(),
                    "rounds_done": Round.objects.filter(
                        campaign_id=self.data["judge_id"], state=RoundState.DONE
                    ).count(),
                    "active_leases": Lease.objects.filter(state=LeaseState.ACTIVE).count(),
                    # A live lease past its expiry by more than the sweep period (and slack).
                    "overdue_leases": Lease.objects.filter(
                        state=LeaseState.ACTIVE, expires_at__lt=now - grace
                    ).count(),
                }
            except Exception as exc:  # noqa: BLE001 - the database may be down right now
                connection.close()
                sample = {"t": round(t, 1), "db_error": type(exc).__name__}
            self.monitor_samples.append(sample)

    def _check_processes(self) -> None:
        for proc in (self.web, self.worker):
            if not proc.alive():
                self.unexpected_exits.append(f"{proc.name} exited at {self.shared.now():.1f}s")
                self.say(f"{proc.name} exited unexpectedly; restarting it\n{proc.tail(1500)}")
                proc.start()

    def _fault_order(self) -> list[str]:
        block = list(self.cfg.faults)
        self.rng.shuffle(block)
        return block

    def _inject(self, kind: str) -> Fault:
        start = self.shared.now()
        if kind == "worker":
            self.worker.kill()
            pause = self.rng.uniform(*self.cfg.worker_down)
            time.sleep(pause)
            self.worker.start()
            detail = f"SIGKILL of the worker's process group; restarted after {pause:.1f} s"
        elif kind == "redis":
            self.redis.stop()
            pause = self.rng.uniform(*self.cfg.down)
            time.sleep(pause)
            self.redis.start()
            detail = f"redis-server SIGKILLed, down {pause:.1f} s, started empty"
        elif kind == "postgres":
            mode = self.rng.choice(["fast", "immediate"])
            self.pg.stop(mode)
            pause = self.rng.uniform(*self.cfg.down)
            time.sleep(pause)
            self.pg.start()
            detail = f"pg_ctl stop -m {mode}, down {pause:.1f} s, started again"
        else:
            raise ValueError(kind)
        return Fault(kind, round(start, 2), round(self.shared.now(), 2), detail)

    def run(self) -> None:
        c = self.cfg
        self.shared = Shared(t0=time.monotonic())
        self.t0_wall = time.time()
        monitor = threading.Thread(target=self._monitor, name="monitor", daemon=True)
        monitor.start()
        seeds = random.Random(c.seed + 1)
        for i, (name, token) in enumerate(sorted(self.data["tokens"].items())):
            client = Annotator(
                name=name,
                token=token,
                base_url=self.base_url,
                campaign_id=self.data["human_id"],
                shared=self.shared,
                seed=seeds.getrandbits(32),
                think=c.think,
                walk_away=c.walk_away if i % 4 == 0 else 0.0,  # a quarter of them wander off
                walk_away_seconds=c.lease_seconds + 2 * c.lease_sweep_seconds + 3,
            )
            self.clients.append(client)
            client.start()
        pending: list[str] = []
        next_at = c.first_fault_after
        last = [0.0]
        while self.shared.now() < c.duration:
            t = self.shared.now()
            if c.faults and t >= next_at and c.duration - t > c.recovery_margin:
                if not pending:
                    pending = self._fault_order()
                kind = pending.pop(0)
                if self._tty():
                    sys.stdout.write("\n")
                self.say(f"injecting {kind}")
                fault = self._inject(kind)
                self.outcome.faults.append(fault)
                self.say(f"{kind}: {fault.detail}")
                if kind == "worker":
                    threading.Thread(target=self._note_ready, args=(fault,), daemon=True).start()
                next_at = fault.end + self.rng.uniform(*c.fault_every)
            self._check_processes()
            self._progress(last)
            time.sleep(0.5)
        if self._tty():
            sys.stdout.write("\n")
        self.say("time is up: stopping the clients (each finishes the answer it is submitting)")
        self.shared.stop.set()
        for client in self.clients:
            client.join(timeout=150)

    def _note_ready(self, fault: Fault) -> None:
        starts = self.worker.starts
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.worker.starts == starts:
            try:
                self._wait_worker_ready(self.worker, 1.0)
                fault.detail += f"; ready again at {self.shared.now():.1f} s"
                return
            except SoakSetupError:
                time.sleep(0.2)  # not up yet, or dead (killed again: the loop ends)
        if self.worker.starts != starts:
            fault.detail += "; killed again before it was ready"
        else:
            fault.detail += "; NOT ready within 180 s"

    # ------------------------------------------------------------------ after the run

    def drain(self) -> None:
        """Wait for the sweeper to free every abandoned lease and for rounds to move on."""
        from django.db import connection

        from rlhf_platform.labeling.models import Lease, LeaseState
        from rlhf_platform.rounds.models import Round, RoundState

        c = self.cfg
        last_fault_end = max((f.end for f in self.outcome.faults), default=0.0)
        lease_deadline = time.monotonic() + c.lease_seconds + 4 * c.lease_sweep_seconds + 30
        round_deadline = time.monotonic() + max(
            0.0, last_fault_end + c.stuck_after - self.shared.now()
        )
        leases_clear = rounds_moved = False
        self.say("waiting for the lease sweeper and for a round to finish after the last fault")
        while True:
            try:
                leases_clear = not Lease.objects.filter(state=LeaseState.ACTIVE).exists()
                after = self.t0_wall + last_fault_end
                rounds_moved = Round.objects.filter(
                    campaign_id=self.data["judge_id"],
                    state=RoundState.DONE,
                    finished_at__gt=dt.datetime.fromtimestamp(after, dt.UTC),
                ).exists()
            except Exception:  # noqa: BLE001
                connection.close()
            now = time.monotonic()
            if (leases_clear or now > lease_deadline) and (rounds_moved or now > round_deadline):
                break
            self._check_processes()
            time.sleep(1.0)
        self.outcome.checks["drain"] = {
            "leases_clear": leases_clear,
            "round_done_after_last_fault": rounds_moved,
            "waited_until_s": round(self.shared.now(), 1),
        }

    def check(self) -> None:
        """Check the database against what the clients were told, in one snapshot.

        The judge campaign keeps running rounds while the checks read: without one snapshot
        a judge label committed between reading the budgets and counting the labels looked
        like a budget drift (seen twice on 2026-11-25).
        """
        from django.db import connection

        connection.close()
        with consistent_snapshot():
            self._check()

    def _check(self) -> None:  # noqa: C901 - one list of checks, read top to bottom
        from django.db.models import Count, F, Q

        from rlhf_platform.budgets.models import Budget, LedgerEntry
        from rlhf_platform.labeling.models import Choice, Comparison, Label, Lease, LeaseState
        from rlhf_platform.rounds.models import Round, RoundState

        o = self.outcome
        fail = o.failures.append
        human, judge = self.data["human_id"], self.data["judge_id"]
        shared = self.shared

        # -- labels: every acknowledged one stored, as acknowledged ------------------------
        by_id: dict[int, object] = {}
        key_to_id: dict[tuple[str, str], int] = {}
        ack_conflicts = 0
        for a in shared.acks:
            prev = by_id.setdefault(a.label_id, a)
            if (prev.annotator, prev.idempotency_key) != (a.annotator, a.idempotency_key):
                ack_conflicts += 1  # one label id acknowledged for two different answers
            if key_to_id.setdefault((a.annotator, a.idempotency_key), a.label_id) != a.label_id:
                ack_conflicts += 1  # one answer acknowledged with two label ids
        stored = {
            lab.pk: lab
            for lab in Label.objects.filter(pk__in=list(by_id)).select_related("annotator")
        }
        lost = [i for i in by_id if i not in stored]
        unswap = {Choice.A: Choice.B, Choice.B: Choice.A}
        mismatched = []
        for label_id, a in by_id.items():
            lab = stored.get(label_id)
            if lab is None:
                continue
            shown = unswap.get(lab.choice, lab.choice) if lab.shown_swapped else lab.choice
            if (
                lab.annotator.username != a.annotator
                or lab.idempotency_key != a.idempotency_key
                or lab.lease_id != a.lease_id
                or shown != a.choice
            ):
                mismatched.append(label_id)
        human_labels = Label.objects.filter(campaign_id=human)
        stored_total = human_labels.count()
        unacked = human_labels.exclude(pk__in=list(by_id)).count()

        # -- duplicates and overlap ----------------------------------------------------------
        def duplicated(labels, *key: str) -> int:
            """How many values of `key` more than one of `labels` share."""
            return labels.values(*key).annotate(n=Count("id")).filter(n__gt=1).count()

        human_rows = Label.objects.filter(annotator__isnull=False)
        dup_pair = duplicated(human_rows, "comparison_id", "annotator_id")
        dup_key = duplicated(human_rows, "annotator_id", "idempotency_key")
        dup_judge = duplicated(
            Label.objects.filter(campaign_id=judge), "comparison_id", "judge_name"
        )
        # labels_count counts human labels (the judge's are on top of the overlap).
        counted = Comparison.objects.annotate(n=Count("labels", filter=Q(labels__source="human")))
        over_overlap = counted.filter(n__gt=F("labels_required")).count()
        count_drift = counted.exclude(n=F("labels_count")).count()
        live = Comparison.objects.annotate(
            n_live=Count("leases", filter=Q(leases__state=LeaseState.ACTIVE))
        )
        leased_drift = live.exclude(n_live=F("leased_count")).count()
        budgets = {
            b.campaign_id: b.labels_spent
            for b in Budget.objects.filter(campaign_id__in=[human, judge])
        }
        budget_drifts = []
        for name, cid in (("human", human), ("judge", judge)):
            labels = Label.objects.filter(campaign_id=cid).count()
            if budgets.get(cid) != labels:
                ledger = LedgerEntry.objects.filter(budget__campaign_id=cid)
                budget_drifts.append(
                    f"{name} campaign: labels_spent {budgets.get(cid)}, labels {labels}, ledger "
                    f"entries {ledger.count()} ({ledger.filter(label__isnull=True).count()} "
                    "without their label)"
                )
        budget_drift = len(budget_drifts)

        # -- leases --------------------------------------------------------------------------
        active_left = Lease.objects.filter(state=LeaseState.ACTIVE).count()
        abandoned = Lease.objects.filter(pk__in=shared.abandoned)
        abandoned_not_expired = abandoned.exclude(state=LeaseState.EXPIRED).count()
        max_overdue = max((s.get("overdue_leases", 0) for s in self.monitor_samples), default=0)

        # -- rounds --------------------------------------------------------------------------
        rounds = list(Round.objects.filter(campaign_id=judge).order_by("index"))
        done = [r for r in rounds if r.state == RoundState.DONE]
        failed = [r for r in rounds if r.state == RoundState.FAILED]
        last_fault_end = max((f.end for f in o.faults), default=0.0)

        def rel(ts) -> float:
            return ts.timestamp() - self.t0_wall

        done_after_last = [r for r in done if r.finished_at and rel(r.finished_at) > last_fault_end]
        open_rounds = [r for r in rounds if r.state not in (RoundState.DONE, RoundState.FAILED)]
        end_t = shared.now()
        stuck = []
        for r in open_rounds:
            last_move = rel(dt.datetime.fromisoformat(r.transitions[-1][1])) if r.transitions else 0
            if end_t - max(last_move, last_fault_end) > self.cfg.stuck_after:
                stuck.append(f"round {r.index} in {r.state} since {last_move:.0f}s")
        transitions = sorted(
            rel(dt.datetime.fromisoformat(ts)) for r in rounds for _, ts in r.transitions
        )

        # -- recovery after each fault -------------------------------------------------------
        ack_times = sorted(a.t for a in shared.acks)
        for f in o.faults:
            f.label_recovery_s = next((round(t - f.end, 2) for t in ack_times if t > f.end), None)
            f.round_recovery_s = next((round(t - f.end, 2) for t in transitions if t > f.end), None)
            if f.label_recovery_s is None:
                fail(f"no label was stored after the {f.kind} fault at {f.start:.0f}s")
            if f.round_recovery_s is None:
                fail(f"no round moved after the {f.kind} fault at {f.start:.0f}s")

        # -- client errors -------------------------------------------------------------------
        kinds = Counter(e.kind for e in shared.events)
        bad = Counter(e.kind for e in shared.events if not e.retryable)
        crashed = [f"{c.name}: {c.crashed!r}" for c in self.clients if c.crashed]
        still_running = [c.name for c in self.clients if c.is_alive()]
        per_fault_kind = Counter()
        for e in shared.events:
            near = [f.kind for f in o.faults if f.start - 1 <= e.t <= f.end + 30]
            per_fault_kind[near[-1] if near else "none"] += 1

        o.counts = {
            "labels_acknowledged": len(by_id),
            "acknowledgements": len(shared.acks),
            "acknowledged_as_replay": sum(1 for a in shared.acks if a.status == 200),
            "acknowledged_after_retry": sum(1 for a in shared.acks if a.attempts > 1),
            "labels_stored": stored_total,
            "labels_lost": len(lost),
            "labels_mismatched": len(mismatched),
            "labels_stored_not_acknowledged": unacked,
            "acknowledgement_conflicts": ack_conflicts,
            "duplicates_comparison_annotator": dup_pair,
            "duplicates_idempotency_key": dup_key,
            "duplicates_judge": dup_judge,
            "comparisons_over_overlap": over_overlap,
            "comparisons_label_count_drift": count_drift,
            "comparisons_leased_count_drift": leased_drift,
            "budgets_drift": budget_drift,
            "comparisons": self.data["comparisons"],
            "requests": shared.requests,
            "nothing_queued_answers": shared.nothing_queued,
            "answers_ended_by_lease_expiry": len(shared.lease_gone),
            "leases_abandoned": len(shared.abandoned),
            "leases_abandoned_not_expired": abandoned_not_expired,
            "leases_active_at_end": active_left,
            "max_overdue_live_leases_seen": max_overdue,
            "client_errors": sum(kinds.values()),
            "client_errors_not_retryable": sum(bad.values()),
            "client_errors_near_fault_kind": dict(per_fault_kind),
            "rounds_done": len(done),
            "rounds_done_after_last_fault": len(done_after_last),
            "rounds_failed": len(failed),
            "rounds_open_at_end": [f"{r.index}:{r.state}" for r in open_rounds],
            "judge_labels": Label.objects.filter(campaign_id=judge).count(),
            "faults": dict(Counter(f.kind for f in o.faults)),
            "worker_starts": self.worker.starts,
        }
        o.errors_by_kind = dict(kinds.most_common())

        for name, bad_count in (
            ("acknowledged labels lost", len(lost)),
            ("acknowledged labels stored differently", len(mismatched)),
            ("conflicting acknowledgements", ack_conflicts),
            ("labels duplicated per comparison and annotator", dup_pair),
            ("labels duplicated per idempotency key", dup_key),
            ("judge labels duplicated", dup_judge),
            ("comparisons labeled over their overlap", over_overlap),
            ("comparisons whose labels_count drifted", count_drift),
            ("comparisons whose leased_count drifted", leased_drift),
            ("budgets whose labels_spent drifted", budget_drift),
            ("live leases left after the sweep period", active_left),
            ("abandoned leases not expired by the sweeper", abandoned_not_expired),
            ("failed rounds", len(failed)),
            ("stuck rounds", len(stuck)),
            ("client errors that are not retryable", sum(bad.values())),
            ("annotator threads that crashed", len(crashed)),
            ("annotator threads that did not stop", len(still_running)),
            ("unexpected process exits", len(self.unexpected_exits)),
        ):
            if bad_count:
                fail(f"{name}: {bad_count}")
        if max_overdue:
            fail(f"live leases overdue past the sweep period seen during the run: {max_overdue}")
        if o.faults and not done_after_last:
            fail("the judge campaign completed no round after the last fault")
        if not by_id:
            fail("no label was acknowledged at all")
        for kind in self.cfg.faults:
            if o.faults and kind not in o.counts["faults"]:
                fail(f"no {kind} fault was injected (run longer)")
        o.checks.update(
            {
                "lost_label_ids": lost[:50],
                "mismatched_label_ids": mismatched[:50],
                "non_retryable_errors": dict(bad),
                "crashed_clients": crashed,
                "stuck_rounds": stuck,
                "budget_drifts": budget_drifts,
                "failed_rounds": [f"{r.index}: {r.failure_reason[:300]}" for r in failed],
                "unexpected_exits": self.unexpected_exits,
            }
        )
        o.timeline = self.monitor_samples[:: max(1, len(self.monitor_samples) // 120)]

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop everything this soak started and remove its private servers' files."""
        self._monitor_stop.set()
        if self.shared is not None:
            self.shared.stop.set()
        for proc in (self.web, self.worker):
            if proc is not None:
                try:
                    proc.stop(timeout=10)
                except Exception as exc:  # noqa: BLE001
                    print(f"could not stop {proc.name}: {exc}", file=sys.stderr)
        if self.redis is not None:
            self.redis.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception as exc:  # noqa: BLE001 - Django may never have been set up
            print(f"closing database connections: {exc}", file=sys.stderr)
        if self.pg is not None:
            try:
                self.pg.destroy()
            except Exception as exc:  # noqa: BLE001
                print(f"could not stop the private PostgreSQL: {exc}", file=sys.stderr)
        if self.tmp is not None:
            if self.cfg.keep:
                print(f"kept {self.tmp} (logs under logs/)", file=sys.stderr)
            else:
                if self.outcome.failures and self.web is not None:
                    self._save_logs()
                shutil.rmtree(self.tmp, ignore_errors=True)

    def _save_logs(self) -> None:
        out = Path(self.cfg.out) / "logs"
        out.mkdir(parents=True, exist_ok=True)
        for p in (self.tmp / "logs").glob("*.log"):
            shutil.copy(p, out / p.name)
