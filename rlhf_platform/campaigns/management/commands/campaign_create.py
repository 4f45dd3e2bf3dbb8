"""Create a campaign from a YAML or JSON spec (see docs/campaigns.md for the format)."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.services import (
    campaign_add_member,
    campaign_create,
    campaign_set_state,
    prompts_import,
)
from rlhf_platform.errors import ServiceError

CAMPAIGN_KEYS = {
    "name",
    "description",
    "guidelines",
    "algorithm",
    "feedback_mode",
    "acquisition_rule",
    "prompts_per_round",
    "responses_per_prompt",
    "labels_per_comparison",
    "seed",
    "max_rounds",
    "eval_every",
    "periodic_tau",
    "round_deadline_seconds",
    "mixed_fraction",
    "policy_config",
    "reward_config",
    "judge_config",
}
BUDGET_KEYS = {
    "label_cap",
    "cost_cap",
    "annotator_daily_cap",
    "human_label_cost",
    "judge_call_cost",
}
OTHER_KEYS = {"budget", "prompts", "members", "start"}


def load_spec(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CommandError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(spec, dict):
        raise CommandError(f"{path}: the spec must be a mapping of settings")
    unknown = sorted(set(spec) - CAMPAIGN_KEYS - OTHER_KEYS)
    if unknown:
        raise CommandError(
            f"{path}: unknown key(s) {unknown}; allowed: {sorted(CAMPAIGN_KEYS | OTHER_KEYS)}"
        )
    budget = spec.get("budget") or {}
    unknown = sorted(set(budget) - BUDGET_KEYS)
    if unknown:
        raise CommandError(
            f"{path}: unknown budget key(s) {unknown}; allowed: {sorted(BUDGET_KEYS)}"
        )
    if "name" not in spec:
        raise CommandError(f"{path}: the spec needs a 'name'")
    return spec


def _money(budget: dict[str, Any], key: str) -> Decimal | None:
    if budget.get(key) is None:
        return None
    try:
        return Decimal(str(budget[key]))
    except InvalidOperation:
        raise CommandError(f"budget.{key}={budget[key]!r} is not a number") from None


class Command(BaseCommand):
    help = "Create a campaign (with budget, prompts and members) from a YAML or JSON spec."

    def add_arguments(self, parser):
        parser.add_argument("spec", type=Path, help="path to the .yaml/.yml/.json spec")
        parser.add_argument("--owner", required=True, help="username of the owning researcher")
        parser.add_argument("--start", action="store_true", help="start the campaign right away")

    def handle(self, *args, spec: Path, owner: str, start: bool, **options):
        data = load_spec(spec)
        user = User.objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"--owner: no user named {owner!r}")
        budget = data.get("budget") or {}
        prompts_file = data.get("prompts")
        try:
            with transaction.atomic():
                campaign = campaign_create(
                    owner=user,
                    **{k: v for k, v in data.items() if k in CAMPAIGN_KEYS},
                    label_cap=budget.get("label_cap"),
                    cost_cap=_money(budget, "cost_cap"),
                    annotator_daily_cap=budget.get("annotator_daily_cap"),
                    human_label_cost=_money(budget, "human_label_cost") or Decimal("0"),
                    judge_call_cost=_money(budget, "judge_call_cost") or Decimal("0"),
                )
                if prompts_file:
                    path = (spec.parent / prompts_file).resolve()
                    fmt = "csv" if path.suffix == ".csv" else "jsonl"
                    try:
                        content = path.read_text()
                    except OSError as exc:
                        raise CommandError(f"prompts: cannot read {path}: {exc.strerror}") from None
                    imported = prompts_import(campaign=campaign, content=content, fmt=fmt)
                    self.stdout.write(f"imported {len(imported)} prompts from {path.name}")
                for username in tqdm(data.get("members") or [], desc="members", disable=None):
                    member = User.objects.filter(username=username).first()
                    if member is None:
                        raise CommandError(f"members: no user named {username!r}")
                    campaign_add_member(campaign=campaign, user=member)
                if start or data.get("start"):
                    campaign_set_state(campaign=campaign, action="start")
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        except Exception as exc:  # a model field's validation, e.g. an unknown algorithm
            if exc.__class__.__name__ == "ValidationError":
                raise CommandError(f"invalid spec: {exc}") from None
            raise
        self.stdout.write(
            self.style.SUCCESS(f"campaign {campaign.pk} {campaign.name!r} is {campaign.state}")
        )
