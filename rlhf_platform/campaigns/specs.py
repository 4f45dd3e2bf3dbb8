"""Campaign specs: a YAML or JSON file describing a campaign, its budget, prompts and members.

Used by ``manage.py campaign_create`` and by the demo seeding. Unknown keys are refused
with their names, so a typo never silently falls back to a default. The format is in
docs/campaigns.md; ``examples/campaigns/`` has one spec per algorithm.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.definition import (
    BUDGET_FIELDS,
    CampaignDefinition,
    campaign_validate,
)
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.services import (
    campaign_add_member,
    campaign_create,
)
from rlhf_platform.datafiles.formats import format_from_name
from rlhf_platform.datafiles.imports import prompts_import_file
from rlhf_platform.errors import InvalidInput
from rlhf_platform.insights.services import campaign_state_audited

# A spec file's keys are the one definition's fields: the budget ones under ``budget:``.
CAMPAIGN_KEYS = set(CampaignDefinition().fields) - set(BUDGET_FIELDS)
BUDGET_KEYS = set(BUDGET_FIELDS)
OTHER_KEYS = {"budget", "prompts", "members", "start"}


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_spec")


def load_spec(path: Path) -> dict[str, Any]:
    """Read and check a spec file; raises InvalidInput naming the file and the problem."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise _invalid(f"cannot read {path}: {exc.strerror}") from None
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        spec = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise _invalid(f"{path} is not valid {kind}: {exc}") from None
    if not isinstance(spec, dict):
        raise _invalid(f"{path}: the spec must be a mapping of settings")
    unknown = sorted(set(spec) - CAMPAIGN_KEYS - OTHER_KEYS)
    if unknown:
        raise _invalid(
            f"{path}: unknown key(s) {unknown}; allowed: {sorted(CAMPAIGN_KEYS | OTHER_KEYS)}"
        )
    budget = spec.get("budget") or {}
    unknown = sorted(set(budget) - BUDGET_KEYS)
    if unknown:
        raise _invalid(f"{path}: unknown budget key(s) {unknown}; allowed: {sorted(BUDGET_KEYS)}")
    if "name" not in spec:
        raise _invalid(f"{path}: the spec needs a 'name'")
    return spec


@transaction.atomic
def campaign_create_from_spec(
    *, owner: User, spec: dict[str, Any], base_dir: Path, start: bool = False
) -> tuple[Campaign, int]:
    """Create the campaign a spec describes, all of it or nothing; returns it and how many
    prompts were imported. ``base_dir`` resolves the spec's relative ``prompts`` path."""
    budget = spec.get("budget") or {}
    # The same definition as the API and the "New campaign" page validates the settings.
    data = {k: v for k, v in spec.items() if k in CAMPAIGN_KEYS}
    data |= {k: v for k, v in budget.items() if v is not None}
    values, errors = campaign_validate(data)
    if errors:
        problems = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
        raise _invalid(f"invalid spec: {problems}")
    try:
        campaign = campaign_create(owner=owner, **values)
    except ValidationError as exc:
        raise _invalid(f"invalid spec: {'; '.join(exc.messages)}") from None
    imported = 0
    if spec.get("prompts"):
        path = (base_dir / spec["prompts"]).resolve()
        try:
            data = path.read_bytes()
            fmt = format_from_name(path.name)
        except OSError as exc:
            raise _invalid(f"prompts: cannot read {path}: {exc.strerror}") from None
        except InvalidInput as exc:
            raise _invalid(f"prompts: {exc.message}") from None
        # The same import as the API, the pages and import_prompts (JSONL, CSV or Parquet).
        imported = prompts_import_file(campaign=campaign, data=data, fmt=fmt)
    for username in spec.get("members") or []:
        member = User.objects.filter(username=username).first()
        if member is None:
            raise _invalid(f"members: no user named {username!r}")
        campaign_add_member(campaign=campaign, user=member)
    if start or spec.get("start"):
        campaign = campaign_state_audited(actor=owner, campaign=campaign, action="start")
    return campaign, imported
