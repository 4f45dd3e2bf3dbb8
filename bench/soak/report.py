"""The soak's report: JSON (everything) and Markdown (what a person reads)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bench.soak.harness import Outcome

HEADLINE = [
    ("labels_acknowledged", "labels acknowledged (distinct ids a client got a 2xx for)"),
    ("acknowledged_as_replay", "acknowledgements that were idempotent replays (200)"),
    ("acknowledged_after_retry", "acknowledgements after at least one retry"),
    ("labels_stored", "human labels stored"),
    ("labels_lost", "acknowledged labels lost"),
    ("labels_mismatched", "acknowledged labels stored differently"),
    ("labels_stored_not_acknowledged", "labels stored but never acknowledged"),
    ("duplicates_comparison_annotator", "duplicates (comparison, annotator)"),
    ("duplicates_idempotency_key", "duplicates (annotator, idempotency key)"),
    ("duplicates_judge", "duplicates (comparison, judge)"),
    ("comparisons_over_overlap", "comparisons over their overlap"),
    ("comparisons_label_count_drift", "comparisons whose labels_count disagrees with labels"),
    ("comparisons_leased_count_drift", "comparisons whose leased_count disagrees with leases"),
    ("budgets_drift", "budgets whose labels_spent disagrees with labels"),
    ("comparisons", "comparisons in the human campaign"),
    ("requests", "HTTP requests sent"),
    ("nothing_queued_answers", "nothing_queued answers"),
    ("answers_ended_by_lease_expiry", "answers dropped because the lease expired (409)"),
    ("leases_abandoned", "leases abandoned by a client (left to the sweeper)"),
    ("leases_abandoned_not_expired", "abandoned leases the sweeper did not expire"),
    ("leases_active_at_end", "live leases left after the sweep period"),
    ("max_overdue_live_leases_seen", "most live leases past expiry + sweep seen at once"),
    ("client_errors", "client errors (non-2xx or exception)"),
    ("client_errors_not_retryable", "of which not retryable"),
    ("rounds_done", "judge rounds done"),
    ("rounds_done_after_last_fault", "judge rounds done after the last fault"),
    ("rounds_failed", "judge rounds failed"),
    ("judge_labels", "judge labels"),
    ("worker_starts", "worker starts"),
]


def write(outcome: Outcome, out: Path, stem: str = "report") -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = asdict(outcome)
    data["ok"] = outcome.ok
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md_path = out / f"{stem}.md"
    md_path.write_text(markdown(outcome) + "\n")
    return json_path, md_path


def markdown(o: Outcome) -> str:
    cfg = o.config
    m = o.machine
    lines = [
        f"# Soak with faults: {'PASS' if o.ok else 'FAIL'}",
        "",
        f"Started {o.started_at}, {o.duration_s:.0f} s in all (setup {o.setup_s:.0f} s); "
        f"load of {cfg['minutes']} min, "
        f"seed {cfg['seed']}, {cfg['annotators']} annotators, overlap {cfg['overlap']}. "
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu')}), load {m.get('load_1m_at_start')} "
        "at the start.",
        "",
        "## Faults injected",
        "",
        "| # | kind | at (s) | back (s) | first label after (s) | first round move after (s) "
        "| what |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(o.faults, 1):
        lines.append(
            f"| {i} | {f.kind} | {f.start:.1f} | {f.end:.1f} | {_s(f.label_recovery_s)} "
            f"| {_s(f.round_recovery_s)} | {f.detail} |"
        )
    lines += ["", "## Counts", "", "| count | value |", "|---|---|"]
    for key, text in HEADLINE:
        if key in o.counts:
            lines.append(f"| {text} | {o.counts[key]} |")
    lines += ["", "## What the clients saw", "", "| error | times |", "|---|---|"]
    for kind, n in o.errors_by_kind.items():
        lines.append(f"| `{kind}` | {n} |")
    if not o.errors_by_kind:
        lines.append("| none | 0 |")
    near = o.counts.get("client_errors_near_fault_kind", {})
    if near:
        lines += [
            "",
            "Errors by the fault they came with (within 30 s after it): "
            + ", ".join(f"{k}: {v}" for k, v in sorted(near.items())),
        ]
    lines += ["", "## Verdict", ""]
    if o.ok:
        lines.append("Every check passed.")
    else:
        lines += [f"- {f}" for f in o.failures]
    return "\n".join(lines)


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f}"
