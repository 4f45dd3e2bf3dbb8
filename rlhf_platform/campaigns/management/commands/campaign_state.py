"""Start, pause, resume or finish a campaign, in the audit log under ``--actor``."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.services import STATE_ACTIONS
from rlhf_platform.errors import ServiceError
from rlhf_platform.insights.services import campaign_state_audited


def get_campaign(ref: str) -> Campaign:
    campaign = Campaign.objects.filter(pk=int(ref)).first() if ref.isdigit() else None
    campaign = campaign or Campaign.objects.filter(name=ref).first()
    if campaign is None:
        raise CommandError(f"no campaign with id or name {ref!r}")
    return campaign


class Command(BaseCommand):
    help = "Change a campaign's state: start, pause, resume or finish."

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="campaign id or name")
        parser.add_argument("action", choices=sorted(STATE_ACTIONS))
        parser.add_argument(
            "--actor",
            required=True,
            help="username of the owner or admin doing it (written in the campaign's audit log)",
        )

    def handle(self, *args, campaign: str, action: str, actor: str, **options):
        obj = get_campaign(campaign)
        user = User.objects.filter(username=actor).first()
        if user is None:
            raise CommandError(f"--actor: no user named {actor!r}")
        try:
            obj = campaign_state_audited(actor=user, campaign=obj, action=action)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(self.style.SUCCESS(f"campaign {obj.pk} {obj.name!r} is {obj.state}"))
