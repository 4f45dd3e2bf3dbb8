"""Start, pause, resume or finish a campaign."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.services import STATE_ACTIONS, campaign_set_state
from rlhf_platform.errors import ServiceError


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

    def handle(self, *args, campaign: str, action: str, **options):
        obj = get_campaign(campaign)
        try:
            obj = campaign_set_state(campaign=obj, action=action)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(self.style.SUCCESS(f"campaign {obj.pk} {obj.name!r} is {obj.state}"))
