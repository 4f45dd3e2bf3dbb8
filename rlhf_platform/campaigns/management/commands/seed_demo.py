"""``manage.py seed_demo``: the users and the campaign of the embedded quickstart.

Idempotent: a second run finds what the first created and changes nothing. Passwords are
generated (never a default), printed once when a user is created, and reset only on
``--reset-passwords``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from rlhf_platform.accounts.models import Role, User
from rlhf_platform.campaigns.models import (
    AcquisitionRule,
    Algorithm,
    Campaign,
    CampaignState,
    FeedbackMode,
)
from rlhf_platform.campaigns.services import (
    campaign_add_member,
    campaign_create,
)
from rlhf_platform.campaigns.specs import campaign_create_from_spec, load_spec
from rlhf_platform.datafiles.imports import comparisons_import_pairs
from rlhf_platform.errors import ServiceError
from rlhf_platform.insights.services import campaign_state_audited

DEMO_DIR = Path(settings.BASE_DIR) / "data" / "demo"
DEMO_PAIRS = DEMO_DIR / "pairs.jsonl"
# Live campaigns run rounds on the demo's worker (SmolLM2 generation, the oracle judge).
DEMO_LIVE_SPECS = (DEMO_DIR / "live_judge_infomax.yaml", DEMO_DIR / "live_human_online.yaml")
DEMO_CAMPAIGN = "Demo: helpful answers"
DEMO_LABEL_CAP = 500
DEMO_GUIDELINES = (
    "Pick the response you would rather receive. Prefer answers that are correct, "
    "helpful and honest; then clear and concise. Choose 'tie' when they are equally "
    "good and 'both bad' when neither is acceptable. Say why in a sentence if you can."
)


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    staff: bool


DEMO_USERS = (
    DemoUser("admin", Role.ADMIN, staff=True),
    DemoUser("researcher", Role.RESEARCHER, staff=False),
    DemoUser("annotator", Role.ANNOTATOR, staff=False),
)


def read_pairs(path: Path) -> list[dict[str, Any]]:
    pairs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pairs.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CommandError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
    if not pairs:
        raise CommandError(f"{path} holds no pairs")
    return pairs


class Command(BaseCommand):
    help = (
        "Create the demo users (admin, researcher, annotator) with generated passwords and "
        "a running demo campaign of bundled example pairs. Safe to run again."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="Give the demo users new generated passwords and print them.",
        )
        parser.add_argument(
            "--no-live",
            action="store_true",
            help="Skip the live campaigns (SmolLM2 rounds on the worker).",
        )
        parser.add_argument(
            "--pairs",
            type=Path,
            default=DEMO_PAIRS,
            help="JSONL file of {prompt, response_a, response_b} (default: the bundled one).",
        )

    def handle(self, *args, reset_passwords: bool, pairs: Path, no_live: bool, **options) -> None:
        if not pairs.is_file():
            raise CommandError(f"Pair file not found: {pairs}")
        records = read_pairs(pairs)
        try:
            with transaction.atomic():
                users, passwords = self._users(reset_passwords)
                self._campaign(users, records, pairs)
                if not no_live:
                    self._live_campaigns(users)
        except ServiceError as exc:
            raise CommandError(f"Seeding failed: {exc.message}") from None
        # Printed only after the transaction committed, so every password shown works.
        if passwords:
            self.stdout.write("")
            self.stdout.write(self.style.WARNING("Demo logins (shown once; keep them now):"))
            for username, password in passwords:
                self.stdout.write(f"  {username:<11} {password}")
            self.stdout.write("  (new ones: python manage.py seed_demo --reset-passwords)\n")
        else:
            self.stdout.write(
                "Passwords were shown when the users were created; "
                "python manage.py seed_demo --reset-passwords prints new ones."
            )
        self.stdout.write(self.style.SUCCESS("Demo data ready."))

    def _users(self, reset: bool) -> tuple[dict[str, User], list[tuple[str, str]]]:
        users: dict[str, User] = {}
        passwords: list[tuple[str, str]] = []
        for spec in DEMO_USERS:
            user = User.objects.filter(username=spec.username).first()
            if user is None:
                password = secrets.token_urlsafe(12)
                user = User.objects.create_user(
                    username=spec.username,
                    password=password,
                    role=spec.role,
                    is_staff=spec.staff,
                    is_superuser=spec.role == Role.ADMIN,
                )
                passwords.append((spec.username, password))
                self.stdout.write(f"Created user {spec.username} ({spec.role})")
            elif reset:
                password = secrets.token_urlsafe(12)
                user.set_password(password)
                user.save(update_fields=["password"])
                passwords.append((spec.username, password))
                self.stdout.write(f"Reset the password of {spec.username}")
            else:
                self.stdout.write(f"User {spec.username} exists; password unchanged")
            users[spec.username] = user
        return users, passwords

    def _campaign(self, users: dict[str, User], records: list[dict], source: Path) -> None:
        campaign = Campaign.objects.filter(name=DEMO_CAMPAIGN).first()
        if campaign is None:
            campaign = campaign_create(
                owner=users["researcher"],
                name=DEMO_CAMPAIGN,
                description=(
                    "30 bundled example pairs (coding, writing, math, advice) labeled by hand: "
                    "a plain A/B campaign with no model and no rounds."
                ),
                guidelines=DEMO_GUIDELINES,
                algorithm=Algorithm.OFFLINE,
                feedback_mode=FeedbackMode.HUMAN,
                acquisition_rule=AcquisitionRule.IMPORTED,
                labels_per_comparison=1,
                label_cap=DEMO_LABEL_CAP,
            )
            self.stdout.write(
                f"Created campaign {campaign.name!r} (id {campaign.pk}, label cap {DEMO_LABEL_CAP})"
            )
        else:
            self.stdout.write(f"Campaign {campaign.name!r} exists (id {campaign.pk})")
        campaign_add_member(campaign=campaign, user=users["annotator"])
        if not campaign.comparisons.exists():
            count = comparisons_import_pairs(campaign=campaign, pairs=records, source="demo")
            self.stdout.write(f"Imported {count} comparisons from {source.name}")
        if campaign.state == CampaignState.DRAFT:
            campaign_state_audited(actor=users["researcher"], campaign=campaign, action="start")
            self.stdout.write("Started the campaign")
        else:
            self.stdout.write(f"Campaign is {campaign.state}")

    def _live_campaigns(self, users: dict[str, User]) -> None:
        for path in DEMO_LIVE_SPECS:
            spec = load_spec(path)
            campaign = Campaign.objects.filter(name=spec["name"]).first()
            if campaign is None:
                campaign, _ = campaign_create_from_spec(
                    owner=users["researcher"], spec=spec, base_dir=path.parent, start=True
                )
                self.stdout.write(
                    f"Created live campaign {campaign.name!r} (id {campaign.pk}); "
                    "the worker generates its rounds"
                )
            else:
                self.stdout.write(f"Live campaign {campaign.name!r} exists (id {campaign.pk})")
            if spec["feedback_mode"] != FeedbackMode.JUDGE:
                campaign_add_member(campaign=campaign, user=users["annotator"])
