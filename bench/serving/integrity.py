"""Database checks after a load run, in plain SQL on a DB-API cursor.

``check_ours`` and ``check_label_studio`` take the ids the clients were acknowledged (a 2xx
answer carrying the stored id) and verify, in the system's own tables: every acknowledged
label is stored exactly once, no comparison (task) holds more labels than its overlap, and
for ours the budget is exact (spent == ledger == labels x unit cost).
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal


def _rows(cursor, sql: str, params: tuple) -> list[tuple]:
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def _acked(acked: list[int], stored: set[int]) -> dict:
    counts = Counter(acked)
    return {
        "acknowledged": len(acked),
        "stored": len(stored),
        "acked_twice": sorted(i for i, n in counts.items() if n > 1),
        "acked_missing": sorted(set(counts) - stored),
        # Written but the client never saw the answer (a lost response): not a loss.
        "stored_not_acked": len(stored - set(counts)),
    }


def check_ours(cursor, campaign_id: int, acked: list[int]) -> dict:
    stored = {
        r[0]
        for r in _rows(
            cursor,
            "SELECT id FROM labeling_label WHERE campaign_id = %s AND source = 'human'",
            (campaign_id,),
        )
    }
    out = _acked(acked, stored)
    out["duplicate_lease"] = len(
        _rows(
            cursor,
            "SELECT lease_id FROM labeling_label WHERE campaign_id = %s AND lease_id IS NOT NULL"
            " GROUP BY lease_id HAVING count(*) > 1",
            (campaign_id,),
        )
    )
    out["duplicate_idempotency_key"] = len(
        _rows(
            cursor,
            "SELECT annotator_id, idempotency_key FROM labeling_label WHERE campaign_id = %s"
            " AND annotator_id IS NOT NULL GROUP BY annotator_id, idempotency_key"
            " HAVING count(*) > 1",
            (campaign_id,),
        )
    )
    out["duplicate_annotator_comparison"] = len(
        _rows(
            cursor,
            "SELECT comparison_id, annotator_id FROM labeling_label WHERE campaign_id = %s"
            " AND annotator_id IS NOT NULL GROUP BY comparison_id, annotator_id"
            " HAVING count(*) > 1",
            (campaign_id,),
        )
    )
    per_comparison = _rows(
        cursor,
        "SELECT c.id, c.labels_required, c.labels_count, count(l.id)"
        " FROM labeling_comparison c LEFT JOIN labeling_label l"
        " ON l.comparison_id = c.id AND l.source = 'human'"
        " WHERE c.campaign_id = %s GROUP BY c.id, c.labels_required, c.labels_count",
        (campaign_id,),
    )
    out["comparisons"] = len(per_comparison)
    out["over_overlap"] = sum(1 for _, req, cnt, n in per_comparison if cnt > req or n > req)
    out["counter_mismatch"] = sum(1 for _, _, cnt, n in per_comparison if cnt != n)
    budget = _rows(
        cursor,
        "SELECT id, labels_spent, cost_spent, human_label_cost, label_cap FROM budgets_budget"
        " WHERE campaign_id = %s",
        (campaign_id,),
    )
    if budget:
        budget_id, spent, cost_spent, unit, cap = budget[0]
        (ledger_labels, ledger_amount, ledger_rows) = _rows(
            cursor,
            "SELECT coalesce(sum(labels), 0), coalesce(sum(amount), 0), count(*)"
            " FROM budgets_ledgerentry WHERE budget_id = %s",
            (budget_id,),
        )[0]
        (label_cost,) = _rows(
            cursor,
            "SELECT coalesce(sum(cost), 0) FROM labeling_label WHERE campaign_id = %s",
            (campaign_id,),
        )[0]
        n = len(stored)
        expected = Decimal(unit) * n
        out["budget"] = {
            "labels_spent": spent,
            "ledger_labels": int(ledger_labels),
            "ledger_rows": ledger_rows,
            "cost_spent": str(cost_spent),
            "ledger_amount": str(ledger_amount),
            "labels_cost": str(label_cost),
            "labels_x_unit_cost": str(expected),
            "label_cap": cap,
        }
        out["budget_exact"] = (
            spent == ledger_labels == ledger_rows == n
            and Decimal(cost_spent) == Decimal(ledger_amount) == Decimal(label_cost) == expected
            and (cap is None or spent <= cap)
        )
    else:
        out["budget"], out["budget_exact"] = None, False
    out["ok"] = _ok(out) and out["budget_exact"] and out["counter_mismatch"] == 0
    return out


def check_label_studio(cursor, project_id: int, acked: list[int]) -> dict:
    stored = {
        r[0]
        for r in _rows(
            cursor, "SELECT id FROM task_completion WHERE project_id = %s", (project_id,)
        )
    }
    out = _acked(acked, stored)
    out["duplicate_lease"] = 0  # Label Studio has no leases (task locks are not stored per answer)
    out["duplicate_idempotency_key"] = 0  # nor idempotency keys
    out["duplicate_annotator_comparison"] = len(
        _rows(
            cursor,
            "SELECT task_id, completed_by_id FROM task_completion WHERE project_id = %s"
            " GROUP BY task_id, completed_by_id HAVING count(*) > 1",
            (project_id,),
        )
    )
    per_task = _rows(
        cursor,
        "SELECT t.id, p.maximum_annotations, count(a.id) FROM task t"
        " JOIN project p ON p.id = t.project_id"
        " LEFT JOIN task_completion a ON a.task_id = t.id AND NOT a.was_cancelled"
        " WHERE t.project_id = %s GROUP BY t.id, p.maximum_annotations",
        (project_id,),
    )
    out["comparisons"] = len(per_task)
    out["over_overlap"] = sum(1 for _, req, n in per_task if n > req)
    out["budget"] = None  # Label Studio keeps no budget
    out["budget_exact"] = None
    out["ok"] = _ok(out)
    return out


def _ok(out: dict) -> bool:
    return (
        not out["acked_twice"]
        and not out["acked_missing"]
        and out["duplicate_lease"] == 0
        and out["duplicate_idempotency_key"] == 0
        and out["duplicate_annotator_comparison"] == 0
        and out["over_overlap"] == 0
    )
