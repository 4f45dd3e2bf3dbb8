"""Show a campaign's state, rounds, budget, evaluations and versions."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from rlhf_platform.budgets.selectors import budget_status
from rlhf_platform.campaigns.management.commands.campaign_state import get_campaign
from rlhf_platform.campaigns.selectors import campaign_progress


class Command(BaseCommand):
    help = "Print a campaign's status."

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="campaign id or name")

    def handle(self, *args, campaign: str, **options):
        c = get_campaign(campaign)
        progress = campaign_progress(c)
        budget = budget_status(campaign_id=c.pk)
        w = self.stdout.write
        w(
            f"{c.name} (id {c.pk}): {c.state}; {c.algorithm}, {c.acquisition_rule} pairs, {c.feedback_mode} feedback"
        )
        cap = budget.label_cap if budget.label_cap is not None else "no cap"
        w(
            f"labels {budget.labels_spent} / {cap}; cost {budget.cost_spent}"
            + (f" ({budget.reason})" if budget.exhausted else "")
        )
        w(
            f"comparisons {progress.comparisons} ({progress.comparisons_open} open); prompts {progress.prompts_train} train, {progress.prompts_eval} eval"
        )
        w(
            f"active versions: policy {c.active_policy_version_id}, reward {c.active_reward_version_id}"
        )
        for rnd in c.rounds.order_by("index"):
            took = (
                f"{(rnd.finished_at - rnd.started_at).total_seconds():.1f} s"
                if rnd.finished_at
                else "..."
            )
            ev = rnd.evaluations.first()
            line = f"  round {rnd.index:3d} {rnd.state:10s} {took:>9s}"
            if rnd.leftovers:
                line += f" leftovers {rnd.leftovers}"
            if ev:
                line += f" win {ev.win_rate:.3f} [{ev.ci_low:.3f}, {ev.ci_high:.3f}] @ {ev.labels_spent} labels"
            if rnd.failure_reason:
                line += f" FAILED: {rnd.failure_reason}"
            w(line)
