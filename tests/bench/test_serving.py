"""The serving benchmark's own logic: its integrity checker and its percentiles.

The checker is run on crafted database states of our own schema (through the normal
pytest-django test database): a clean run passes; a duplicated label, a comparison over its
overlap, a wrong budget, a lost acknowledged label each make it fail. Label Studio is never
installed here.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import connection

from bench.serving.integrity import check_ours
from bench.serving.stats import percentile, summarize_ms
from rlhf_platform.budgets.models import Budget
from rlhf_platform.labeling.models import Comparison, Label
from rlhf_platform.labeling.services import comparison_next, label_submit
from tests.conftest import make_campaign, make_user


def test_percentile_matches_linear_interpolation():
    xs = [15, 20, 35, 40, 50]
    assert percentile(xs, 0) == 15
    assert percentile(xs, 100) == 50
    assert percentile(xs, 50) == 35
    assert percentile(xs, 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert percentile(list(reversed(range(1, 101))), 95) == pytest.approx(95.05)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_summarize_ms_converts_seconds():
    s = summarize_ms([0.001, 0.002, 0.003, 0.004])
    assert s["count"] == 4
    assert s["p50_ms"] == 2.5
    assert s["max_ms"] == 4.0
    assert summarize_ms([])["p99_ms"] is None


@pytest.fixture
def labeled(researcher):
    """A campaign of 3 comparisons x overlap 2, fully labeled by two annotators."""
    ann = [make_user("bench-a"), make_user("bench-b")]
    campaign = make_campaign(
        researcher, name="bench", pairs=3, overlap=2, members=tuple(ann), label_cap=6,
        human_label_cost=Decimal("0.25"),
    )  # fmt: skip
    acked = []
    for user in ann:
        for _ in range(3):
            lease = comparison_next(annotator=user, campaign_id=campaign.pk).lease
            label, created = label_submit(
                annotator=user, lease_id=lease.pk, choice="A", idempotency_key=uuid.uuid4().hex
            )
            assert created
            acked.append(label.pk)
    return campaign, acked


def _check(campaign, acked):
    with connection.cursor() as cur:
        return check_ours(cur, campaign.pk, acked)


def test_clean_run_passes(labeled):
    campaign, acked = labeled
    out = _check(campaign, acked)
    assert out["ok"], out
    assert out["acknowledged"] == out["stored"] == 6
    assert out["budget_exact"] and Decimal(out["budget"]["labels_x_unit_cost"]) == Decimal("1.50")


def test_lost_and_double_acknowledged_labels_fail(labeled):
    campaign, acked = labeled
    out = _check(campaign, [*acked, 10**9])
    assert not out["ok"] and out["acked_missing"] == [10**9]
    out = _check(campaign, [*acked, acked[0]])
    assert not out["ok"] and out["acked_twice"] == [acked[0]]


def test_duplicated_label_fails(labeled):
    """A second row for the same lease and key (the database's constraints dropped for the
    test, inside its transaction) is found."""
    campaign, acked = labeled
    first = Label.objects.get(pk=acked[0])
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks before ALTER
        cur.execute("ALTER TABLE labeling_label DROP CONSTRAINT labeling_label_lease_id_key")
        cur.execute("DROP INDEX label_one_per_annotator_comparison")
        cur.execute("DROP INDEX label_idempotency_key_unique")
    Label.objects.filter(pk=first.pk).update(cost=Decimal("0.25"))
    first.pk = None
    first.save()
    out = _check(campaign, acked)
    assert not out["ok"]
    assert out["duplicate_lease"] == 1
    assert out["duplicate_idempotency_key"] == 1
    assert out["duplicate_annotator_comparison"] == 1
    assert out["stored_not_acked"] == 1
    assert out["over_overlap"] == 1  # 3 label rows on a comparison that wants 2
    assert not out["budget_exact"]  # 7 labels, 6 debited


def test_over_overlap_counter_fails(labeled):
    campaign, acked = labeled
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cur.execute(
            "ALTER TABLE labeling_comparison DROP CONSTRAINT comparison_labels_within_required"
        )
    comparison = Comparison.objects.filter(campaign=campaign).first()
    Comparison.objects.filter(pk=comparison.pk).update(labels_count=3)
    out = _check(campaign, acked)
    assert not out["ok"] and out["over_overlap"] == 1 and out["counter_mismatch"] == 1


@pytest.mark.parametrize(
    "change",
    [
        {"labels_spent": 5},  # spent != ledger
        {"cost_spent": Decimal("1.25")},  # cost != ledger
        {"human_label_cost": Decimal("0.30")},  # ledger != labels x unit cost
    ],
)
def test_wrong_budget_fails(labeled, change):
    campaign, acked = labeled
    Budget.objects.filter(campaign=campaign).update(**change)
    out = _check(campaign, acked)
    assert not out["budget_exact"] and not out["ok"]


# --- the measurement helpers of issue 21 ------------------------------------------------------


def test_tree_cpu_counts_children_that_have_exited():
    """PostgreSQL's CPU is read as the postmaster's tree: a backend that exits within the
    window (Label Studio connects per request) must still be counted."""
    import os
    import subprocess
    import sys

    from bench.serving.run import tree_cpu_s

    before = tree_cpu_s(os.getpid())
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)  # burns 0.3 s, then is reaped
    assert tree_cpu_s(os.getpid()) - before >= 0.25


def test_profile_categories_and_py_spy_summary(tmp_path):
    from bench.serving.inproc import category
    from bench.serving.run import Profiler

    assert category("/x/site-packages/psycopg/cursor.py") == "psycopg (driver, wire protocol)"
    assert category("/x/site-packages/django/db/models/sql/compiler.py").startswith(
        "Django ORM: SQL"
    )
    assert category("/x/rlhf_platform/labeling/pg.py").startswith("our code")
    raw = tmp_path / "raw.txt"
    raw.write_text(
        'process 1:"gunicorn";run (threading.py:982);execute (psycopg/cursor.py:97) 30\n'
        'process 1:"gunicorn";run (threading.py:982);as_sql (django/db/models/sql/compiler.py:7) 10\n'
        'process 1:"gunicorn";wait (threading.py:320) 60\n'
    )
    out = Profiler.summarize(raw)
    assert out["samples"] == 100
    assert out["share"]["psycopg (driver, wire protocol)"] == 0.3
    assert out["share"]["Python stdlib: datetime, uuid, random, ..."] == 0.6


def test_ratios_compare_ours_with_each_system_per_scenario():
    from bench.serving.run import markdown, ratios

    def run(system, scenario, lps, cpu):
        return {
            "system": system,
            "scenario": scenario,
            "labels_per_s": lps,
            "total_cpu_ms_per_label": cpu,
        }

    runs = [
        run("ours", "N=32", 120.0, 8.0),
        run("label-studio", "N=32", 4.0, 240.0),
        run("label-studio-gunicorn", "N=32", 6.0, 200.0),
        run("ours", "N=32 think 2s", 15.0, 9.0),
        run("label-studio", "N=32 think 2s", 3.0, 250.0),
    ]
    r = ratios(runs)
    assert r["N=32"]["others"]["label-studio"]["ratio"] == 30.0
    assert r["N=32"]["others"]["label-studio"]["cpu_ratio"] == 30.0
    assert r["N=32"]["others"]["label-studio-gunicorn"]["ratio"] == 20.0
    assert "label-studio-gunicorn" not in r["N=32 think 2s"]["others"]
    table = markdown({"runs": [], "ratios": r})
    assert "| N=32 | 120.0 | 8.0 | 4.0 | 240.0 | 30.00x | 30.0x |" in table
