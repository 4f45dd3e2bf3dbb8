"""Writes to campaigns: creation, membership, state changes, prompt and pair imports."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.egress import judge_config_check
from rlhf_platform.campaigns.models import (
    AcquisitionRule,
    Campaign,
    CampaignState,
    Invite,
    Membership,
    Prompt,
    Response,
    Split,
)
from rlhf_platform.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from rlhf_platform.labeling.models import Comparison
from rlhf_platform.rounds import dispatch

PROMPT_MAX_CHARS = 20_000

# action -> (states it may start from, state it leads to)
STATE_ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "start": ((CampaignState.DRAFT,), CampaignState.RUNNING),
    "pause": ((CampaignState.RUNNING,), CampaignState.PAUSED),
    "resume": ((CampaignState.PAUSED,), CampaignState.RUNNING),
    "finish": (
        (CampaignState.DRAFT, CampaignState.RUNNING, CampaignState.PAUSED),
        CampaignState.FINISHED,
    ),
}


@transaction.atomic
def campaign_create(
    *,
    owner: User,
    name: str,
    label_cap: int | None = None,
    cost_cap: Decimal | None = None,
    annotator_daily_cap: int | None = None,
    human_label_cost: Decimal = Decimal("0"),
    judge_call_cost: Decimal = Decimal("0"),
    judge_token_cost: Decimal = Decimal("0"),
    **fields: Any,
) -> Campaign:
    """Create a campaign in the draft state, with its budget."""
    if not owner.is_researcher:
        raise PermissionDenied("Only researchers and admins create campaigns.")
    if Campaign.objects.filter(name=name).exists():
        raise Conflict(f"A campaign named {name!r} exists already.", code="name_taken")
    judge_config_check(fields.get("judge_config"))
    campaign = Campaign(owner=owner, name=name, **fields)
    campaign.full_clean()
    campaign.save()
    Budget.objects.create(
        campaign=campaign,
        label_cap=label_cap,
        cost_cap=cost_cap,
        annotator_daily_cap=annotator_daily_cap,
        human_label_cost=human_label_cost,
        judge_call_cost=judge_call_cost,
        judge_token_cost=judge_token_cost,
    )
    return campaign


def campaign_add_member(*, campaign: Campaign, user: User) -> Membership:
    membership, _ = Membership.objects.get_or_create(campaign=campaign, user=user)
    return membership


@transaction.atomic
def campaign_remove_member(*, campaign: Campaign, user: User) -> bool:
    """Remove ``user`` from the campaign; their live leases there go back to the queue.
    Their labels stay. Returns whether they were a member."""
    from rlhf_platform.labeling.services import leases_release_for

    deleted, _ = Membership.objects.filter(campaign=campaign, user=user).delete()
    leases_release_for(annotator=user, campaign_id=campaign.pk)
    return bool(deleted)


def _invite_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite_create(*, campaign: Campaign, created_by: User, hours: int) -> tuple[Invite, str]:
    """A new invite link's row and its secret token (shown once; only its hash is kept)."""
    if not 1 <= hours <= 24 * 30:
        raise InvalidInput("An invite lasts 1 hour to 30 days.", code="invalid_invite_hours")
    token = secrets.token_urlsafe(24)
    invite = Invite.objects.create(
        campaign=campaign,
        token_hash=_invite_hash(token),
        created_by=created_by,
        expires_at=timezone.now() + dt.timedelta(hours=hours),
    )
    return invite, token


@transaction.atomic
def invite_accept(*, token: str, user: User) -> Campaign:
    """Make ``user`` a member of the invite's campaign, if the link is still valid."""
    invite = (
        Invite.objects.select_for_update()
        .select_related("campaign")
        .filter(token_hash=_invite_hash(token))
        .first()
    )
    if invite is None or invite.revoked_at is not None:
        raise NotFound("This invite link is not valid.", code="invite_not_found")
    if invite.expires_at <= timezone.now():
        raise Conflict("This invite link has expired; ask for a new one.", code="invite_expired")
    campaign_add_member(campaign=invite.campaign, user=user)
    Invite.objects.filter(pk=invite.pk).update(uses=F("uses") + 1)
    return invite.campaign


def invite_revoke(*, invite: Invite) -> None:
    Invite.objects.filter(pk=invite.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def campaign_set_state(*, campaign: Campaign, action: str) -> Campaign:
    """Apply ``action`` (start, pause, resume, finish) with a conditional UPDATE, so two
    concurrent requests cannot both succeed from the same state."""
    if action not in STATE_ACTIONS:
        raise InvalidInput(
            f"Unknown action {action!r}; use one of {', '.join(STATE_ACTIONS)}.",
            code="invalid_action",
        )
    sources, target = STATE_ACTIONS[action]
    changed = Campaign.objects.filter(pk=campaign.pk, state__in=sources).update(state=target)
    campaign.refresh_from_db()
    if not changed:
        raise Conflict(
            f"Cannot {action} a campaign that is {campaign.state}.", code="invalid_transition"
        )
    if target == CampaignState.RUNNING and campaign.runs_rounds:
        dispatch.open_round(campaign.pk)
    return campaign


@dataclass
class PromptRow:
    text: str
    split: str
    reference: str
    messages: list[dict[str, str]] | None
    metadata: dict[str, Any]


def has_nul(value: Any) -> bool:
    """Whether a string anywhere in ``value`` holds U+0000, which PostgreSQL cannot store
    in text or jsonb (the insert would fail with a server error)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


def _parse_prompt_record(record: Any) -> PromptRow:
    if not isinstance(record, dict):
        raise ValueError("expected an object with a 'prompt' field")
    if has_nul(record):
        raise ValueError("contains a NUL character (\\u0000), which cannot be stored")
    text = record.get("prompt", record.get("text"))
    messages = record.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ValueError("'messages' must be a list of {role, content} objects")
        if text in (None, ""):
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'prompt'")
    if len(text) > PROMPT_MAX_CHARS:
        raise ValueError(f"prompt longer than {PROMPT_MAX_CHARS} characters")
    split = record.get("split") or Split.TRAIN
    if split not in Split.values:
        raise ValueError(f"split must be one of {', '.join(Split.values)}, not {split!r}")
    reference = record.get("reference") or ""
    if not isinstance(reference, str):
        raise ValueError("'reference' must be a string")
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            raise ValueError("'metadata' is not valid JSON") from None
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    return PromptRow(
        text=text, split=split, reference=reference, messages=messages, metadata=metadata
    )


def parse_prompt_file(content: str, fmt: str) -> list[PromptRow]:
    """Parse JSONL or CSV prompt rows; raise InvalidInput listing every bad line."""
    rows: list[PromptRow] = []
    errors: list[dict[str, Any]] = []
    if fmt == "jsonl":
        for lineno, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(_parse_prompt_record(json.loads(line)))
            except json.JSONDecodeError as exc:
                errors.append({"line": lineno, "error": f"invalid JSON: {exc.msg}"})
            except ValueError as exc:
                errors.append({"line": lineno, "error": str(exc)})
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(content))
        if not reader.fieldnames or not {"prompt", "text"} & set(reader.fieldnames):
            raise InvalidInput(
                "The CSV needs a header row with a 'prompt' column.", code="import_invalid"
            )
        for record in reader:
            try:
                if None in record:
                    raise ValueError("more fields than the header has")
                rows.append(_parse_prompt_record(record))
            except ValueError as exc:
                errors.append({"line": reader.line_num, "error": str(exc)})
    else:
        raise InvalidInput(f"Unknown format {fmt!r}; use jsonl or csv.", code="invalid_format")
    return checked_rows(rows, errors)


def checked_rows(rows: list, errors: list[dict[str, Any]], *, unit: str = "line") -> list:
    """``rows`` if the whole file parsed; else InvalidInput listing every bad row (the
    message names the first five, ``details`` holds them all), so nothing is imported."""
    if errors:
        summary = "; ".join(f"{unit} {e['line']}: {e['error']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InvalidInput(
            f"{len(errors)} bad row(s), nothing imported: {summary}{more}",
            code="import_invalid",
            details=errors,
        )
    if not rows:
        raise InvalidInput("The file holds no prompts.", code="import_empty")
    return rows


def prompts_create(
    *,
    campaign: Campaign,
    rows: list[PromptRow],
    progress: Callable[[int], object] | None = None,
    batch_size: int = 1000,
) -> list[Prompt]:
    """Insert parsed rows, ``batch_size`` per INSERT; call inside the import's transaction."""
    created: list[Prompt] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        created += Prompt.objects.bulk_create(
            Prompt(
                campaign=campaign,
                text=row.text,
                split=row.split,
                reference=row.reference,
                messages=row.messages,
                metadata=row.metadata,
            )
            for row in chunk
        )
        if progress:
            progress(len(chunk))
    return created


@transaction.atomic
def prompts_import(*, campaign: Campaign, content: str, fmt: str) -> list[Prompt]:
    """Import every row of a JSONL or CSV file, or none of them."""
    return prompts_create(campaign=campaign, rows=parse_prompt_file(content, fmt))


@transaction.atomic
def comparisons_import_pairs(
    *, campaign: Campaign, pairs: list[dict[str, Any]], source: str = "imported"
) -> int:
    """Queue comparisons of existing responses: ``[{prompt, response_a, response_b, ...}]``.

    For plain A/B campaigns without a policy (and the demo before live generation).
    """
    created = 0
    for i, pair in enumerate(pairs, start=1):
        try:
            row = _parse_prompt_record(pair)
            a, b = pair["response_a"], pair["response_b"]
        except (ValueError, KeyError) as exc:
            raise InvalidInput(f"pair {i}: {exc}", code="import_invalid") from None
        if not (isinstance(a, str) and isinstance(b, str) and a.strip() and b.strip()) or a == b:
            raise InvalidInput(
                f"pair {i}: needs two different non-empty responses", code="import_invalid"
            )
        prompt, _ = Prompt.objects.get_or_create(
            campaign=campaign,
            text=row.text,
            split=row.split,
            defaults={"reference": row.reference, "metadata": row.metadata},
        )
        resp_a = Response.objects.create(prompt=prompt, text=a, source=source)
        resp_b = Response.objects.create(prompt=prompt, text=b, source=source)
        Comparison.objects.create(
            campaign=campaign,
            prompt=prompt,
            response_a=resp_a,
            response_b=resp_b,
            acquisition_rule=AcquisitionRule.IMPORTED,
            priority=float(pair.get("priority", 0.0)),
            labels_required=campaign.labels_per_comparison,
        )
        created += 1
    return created
