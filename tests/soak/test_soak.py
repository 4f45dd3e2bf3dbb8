"""The soak's short form (issue 9), run by CI: about 75 s of load with faults.

32 simulated annotators over HTTP plus a judge campaign running rounds, against a private
PostgreSQL, Redis, gunicorn and one Celery worker that the soak starts itself on free ports
(never the machine's shared servers), while it SIGKILLs the worker and restarts Redis and
PostgreSQL, at least once each. Then: zero acknowledged labels lost, zero duplicated, no
comparison leased forever, no round stuck or failed, clients saw only retryable errors and
recovered after every fault. The soak removes its servers at the end.

It runs as a subprocess (``python -m bench.soak``) because it configures Django for its own
database; the verdict is read from its JSON report. Needs PostgreSQL's server binaries
(initdb, pg_ctl; as root also runuser) and redis-server: without them it fails and says what
is missing (CI is a machine like this one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_short_soak_with_every_fault_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    command = [
        sys.executable, "-m", "bench.soak",
        "--minutes", "1.25",
        "--first-fault-after", "8",
        "--fault-every", "8,12",
        "--down", "2,4",
        "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    output = (proc.stdout + proc.stderr)[-8000:]
    if proc.returncode == 2:
        pytest.fail(f"the soak could not start its private servers:\n{output}", pytrace=False)
    report_path = out / "report.json"
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    counts = report["counts"]

    assert {f["kind"] for f in report["faults"]} == {"worker", "redis", "postgres"}, output
    assert counts["labels_acknowledged"] > 100, output
    assert counts["labels_lost"] == 0, report["checks"]["lost_label_ids"]
    assert counts["labels_mismatched"] == 0, report["checks"]["mismatched_label_ids"]
    assert counts["duplicates_comparison_annotator"] == 0
    assert counts["duplicates_idempotency_key"] == 0
    assert counts["duplicates_judge"] == 0
    assert counts["comparisons_over_overlap"] == 0
    assert counts["comparisons_label_count_drift"] == 0
    assert counts["comparisons_leased_count_drift"] == 0
    assert counts["budgets_drift"] == 0, report["checks"]["budget_drifts"]
    assert counts["leases_active_at_end"] == 0
    assert counts["leases_abandoned_not_expired"] == 0
    assert counts["rounds_failed"] == 0, report["checks"]["failed_rounds"]
    assert not report["checks"]["stuck_rounds"]
    assert counts["rounds_done_after_last_fault"] >= 1, output
    assert counts["client_errors_not_retryable"] == 0, report["checks"]["non_retryable_errors"]
    for fault in report["faults"]:
        assert fault["label_recovery_s"] is not None, fault
        assert fault["round_recovery_s"] is not None, fault
    assert report["ok"], report["failures"]
    assert proc.returncode == 0, output
    leftovers = [p for p in Path("/tmp").glob("rlhf-soak-*") if str(p) in output]
    assert not leftovers, f"the soak left its servers' files behind: {leftovers}"
