"""The data of every chart and table as rows: what the CSV downloads hold.

Each function takes what the selectors return and gives ``(header, rows)``; the pages draw
from the same selectors, so a CSV holds exactly the numbers its chart shows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from rlhf_platform.datafiles.cells import spreadsheet_safe
from rlhf_platform.insights import selectors, stats

Table = tuple[list[str], list[list[Any]]]


def _r(v: float | None, digits: int = 6) -> Any:
    return "" if v is None else round(v, digits)


def rounds_table(rows: Sequence[selectors.RoundRow]) -> Table:
    header = ["round", "state", "started_at", "finished_at", "duration_s", "leftovers"]
    states = ("generating", "selecting", "labeling", "learning", "evaluating")
    header += [f"{s}_s" for s in states]
    out = []
    for r in rows:
        per_state: dict[str, float] = {}
        for s in r.segments:
            per_state[s.state] = per_state.get(s.state, 0.0) + s.seconds
        out.append(
            [
                r.index,
                r.state,
                r.started_at.isoformat(),
                r.finished_at.isoformat() if r.finished_at else "",
                round(r.duration_s, 3),
                r.leftovers,
                *[_r(per_state.get(s), 3) for s in states],
            ]
        )
    return header, out


def win_rate_table(campaigns: Sequence, series: dict[int, list[selectors.WinRatePoint]]) -> Table:
    header = ["campaign", "algorithm", "round", "labels", "win_rate", "ci_low", "ci_high"]
    header += ["n_prompts", "judge"]
    rows = [
        [c.name, c.algorithm, p.round_index, p.labels, p.win_rate, p.ci_low, p.ci_high]
        + [p.n_prompts, p.judge]
        for c in campaigns
        for p in series[c.pk]
    ]
    return header, rows


def fit_table(rows: Sequence[selectors.FitRow], target: float) -> Table:
    header = ["campaign", "algorithm", "a", "b", "points", "r2", "target_win_rate"]
    header += ["labels_needed", "label_ratio_vs_reference"]
    return header, [
        [
            r.campaign.name,
            r.campaign.algorithm,
            _r(r.fit.a if r.fit else None),
            _r(r.fit.b if r.fit else None),
            r.fit.points if r.fit else 0,
            _r(r.fit.r2 if r.fit else None),
            target,
            _r(r.labels_needed, 1),
            _r(r.ratio, 4),
        ]
        for r in rows
    ]


def reward_accuracy_table(rows: Sequence[selectors.RewardAccuracy]) -> Table:
    return ["reward_version", "round", "held_out_labels", "correct", "accuracy"], [
        [r.version_id, "" if r.round_index is None else r.round_index, r.labels, r.correct]
        + [_r(r.accuracy)]
        for r in rows
    ]


def scores_table(groups: Sequence[selectors.ScoreGroup]) -> Table:
    return ["round", "acquisition_rule", "score"], [
        [g.round_index, g.rule, s] for g in groups for s in g.scores
    ]


def confusion_csv_table(agreement: selectors.Agreement) -> Table:
    header = ["human \\ judge", *stats.CHOICES]
    return header, [
        [choice, *agreement.confusion[i]] if agreement.confusion else [choice]
        for i, choice in enumerate(stats.CHOICES)
    ]


def annotators_agreement_table(agreement: selectors.Agreement) -> Table:
    header = ["annotator", "labels", "judged_labels", "agreement_with_judge"]
    header += ["labels_with_majority", "agreement_with_majority"]
    return header, [
        [a.username, a.labels, a.with_judge_n, _r(a.with_judge), a.with_majority_n]
        + [_r(a.with_majority)]
        for a in agreement.annotators
    ]


def disagreements_table(agreement: selectors.Agreement) -> Table:
    header = ["comparison_id", "gap", "human_share_a", "judge_prob_a", "judge_choice"]
    header += ["human_choices", "prompt", "response_a", "response_b"]
    return header, [
        [d.comparison_id, _r(d.gap), _r(d.human_share_a), _r(d.judge_prob_a), d.judge_choice]
        + [" ".join(d.human_choices), d.prompt, d.response_a, d.response_b]
        for d in agreement.disagreements
    ]


def throughput_table(rows: Sequence[selectors.AnnotatorThroughput]) -> Table:
    header = ["annotator", "labels", "labels_per_hour", "median_seconds", "skipped"]
    header += ["skip_rate", "labels_today", "agreement"]
    return header, [
        [r.username, r.labels, _r(r.labels_per_hour, 2), _r(r.median_seconds, 3), r.skipped]
        + [_r(r.skip_rate), r.today, _r(r.agreement)]
        for r in rows
    ]


def spend_table(rows: Sequence[selectors.SourceSpend]) -> Table:
    return ["source", "labels", "amount", "tokens", "unit_cost"], [
        [r.source, r.labels, str(r.amount), r.tokens, str(r.unit_cost)] for r in rows
    ]


def ledger_table(entries: Iterable) -> Table:
    header = ["id", "created_at", "source", "annotator", "labels", "amount", "tokens", "note"]
    return header, [
        [e.pk, e.created_at.isoformat(), e.source, e.annotator.username if e.annotator else ""]
        + [e.labels, str(e.amount), e.tokens, e.note]
        for e in entries
    ]


def cumulative_spend(entries: Sequence) -> Table:
    """Labels and cost spent so far after each ledger entry, oldest first."""
    labels, cost, rows = 0, 0.0, []
    for e in sorted(entries, key=lambda e: (e.created_at, e.pk)):
        labels += e.labels
        cost += float(e.amount)
        rows.append([e.created_at.isoformat(), labels, round(cost, 6)])
    return ["created_at", "labels_spent", "cost_spent"], rows


def to_csv(table: Table) -> str:
    header, rows = table
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([spreadsheet_safe(v) for v in header])
    writer.writerows([spreadsheet_safe(v) for v in row] for row in rows)
    return out.getvalue()
