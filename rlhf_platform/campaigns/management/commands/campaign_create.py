"""Create a campaign from a YAML or JSON spec (format: docs/campaigns.md)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.specs import campaign_create_from_spec, load_spec
from rlhf_platform.errors import ServiceError


class Command(BaseCommand):
    help = "Create a campaign (with budget, prompts and members) from a YAML or JSON spec."

    def add_arguments(self, parser):
        parser.add_argument("spec", type=Path, help="path to the .yaml/.yml/.json spec")
        parser.add_argument("--owner", required=True, help="username of the owning researcher")
        parser.add_argument("--start", action="store_true", help="start the campaign right away")

    def handle(self, *args, spec: Path, owner: str, start: bool, **options):
        user = User.objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"--owner: no user named {owner!r}")
        try:
            campaign, imported = campaign_create_from_spec(
                owner=user, spec=load_spec(spec), base_dir=spec.parent, start=start
            )
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        if imported:
            self.stdout.write(f"imported {imported} prompts")
        self.stdout.write(
            self.style.SUCCESS(f"campaign {campaign.pk} {campaign.name!r} is {campaign.state}")
        )
