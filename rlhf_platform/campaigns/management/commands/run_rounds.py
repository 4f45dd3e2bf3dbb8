"""Run a campaign's rounds in the foreground, without a worker (notebooks, debugging)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from rlhf_platform.campaigns.management.commands.campaign_state import get_campaign
from rlhf_platform.campaigns.models import CampaignState
from rlhf_platform.rounds.models import Evaluation, RoundState
from rlhf_platform.rounds.services import campaign_run_inline


class Command(BaseCommand):
    help = "Run N rounds of a running campaign in this process, with a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="campaign id or name")
        parser.add_argument("--rounds", type=int, default=1, help="how many rounds (default 1)")

    def handle(self, *args, campaign: str, rounds: int, **options):
        obj = get_campaign(campaign)
        if rounds < 1:
            raise CommandError("--rounds must be at least 1")
        if obj.state != CampaignState.RUNNING:
            raise CommandError(f"campaign {obj.name!r} is {obj.state}; start or resume it first")
        if not obj.runs_rounds:
            raise CommandError(
                f"campaign {obj.name!r} has no policy_config.backend: it runs no rounds"
            )
        started = time.monotonic()
        bar = tqdm(total=rounds, desc=f"{obj.name} rounds", unit="round", disable=None)

        def done(rnd):
            bar.update(1)
            ev = Evaluation.objects.filter(round=rnd).first()
            extra = (
                f", win rate {ev.win_rate:.3f} [{ev.ci_low:.3f}, {ev.ci_high:.3f}] at {ev.labels_spent} labels"
                if ev
                else ""
            )
            bar.write(
                f"round {rnd.index}: {rnd.state}{extra}"
                + (f" ({rnd.failure_reason})" if rnd.failure_reason else "")
            )

        finished = campaign_run_inline(campaign_id=obj.pk, rounds=rounds, on_round_done=done)
        bar.close()
        failed = [r for r in finished if r.state == RoundState.FAILED]
        self.stdout.write(f"{len(finished)} round(s) in {time.monotonic() - started:.1f} s")
        if failed:
            raise CommandError(f"round {failed[0].index} failed: {failed[0].failure_reason}")
