"""Writes to campaigns: creation, membership, state changes, prompt and pair imports."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ml_worker.core.campaign_config import policy_config_problem, reward_config_problem
from ml_worker.core.choice import Choice
from rlhf_platform import limits
from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.models import Budget
from rlhf_platform.campaigns.definition import BUDGET_FIELDS, DEFINITION_FIELDS
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
def campaign_create(*, owner: User, name: str, **values: Any) -> Campaign:
    """Create a campaign in the draft state, with its budget.

    ``values``: any field of the one definition
    (:data:`~rlhf_platform.campaigns.definition.DEFINITION_FIELDS`: the campaign's own and
    its budget's); omitted ones take the models' defaults. Callers from outside (API, spec,
    page) validate with :func:`~rlhf_platform.campaigns.definition.campaign_validate` first.
    """
    unknown = sorted(set(values) - set(DEFINITION_FIELDS))
    if unknown:  # a caller's bug, not a user's input: the definition is the list
        raise TypeError(f"campaign_create() got unknown setting(s) {unknown}")
    budget = {k: values[k] for k in BUDGET_FIELDS if k in values}
    fields = {k: v for k, v in values.items() if k not in BUDGET_FIELDS}
    if not owner.is_researcher:
        raise PermissionDenied("Only researchers and admins create campaigns.")
    problem = limits.value_problem({"name": name, **fields})
    if problem:  # spec files and the admin reach here without the API's serializers
        raise InvalidInput(f"The campaign {problem}.", code="invalid_text")
    if Campaign.objects.filter(name=name).exists():
        raise Conflict(f"A campaign named {name!r} exists already.", code="name_taken")
    judge_config_check(fields.get("judge_config"))
    # Checked here too for callers without the definition's serializer (the admin's form).
    for key, check in (
        ("policy_config", policy_config_problem),
        ("reward_config", reward_config_problem),
    ):
        problem = check(fields.get(key) or {})
        if problem:
            raise InvalidInput(problem, code=f"invalid_{key}")
    campaign = Campaign(owner=owner, name=name, **fields)
    campaign.full_clean()
    campaign.save()
    Budget.objects.create(campaign=campaign, **budget)
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


def _parse_prompt_record(record: Any) -> PromptRow:
    """One import row (a JSON object, a CSV row or a Parquet row); ValueError says why not.

    Every text is checked for what cannot be stored (``limits.value_problem``) and for its
    length (``PROMPT_MAX_CHARS``), so a bad row is refused here, never by the database.
    """
    if not isinstance(record, dict):
        raise ValueError("expected an object with a 'prompt' field")
    problem = limits.value_problem(record)
    if problem:
        raise ValueError(problem)
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
        if not messages:
            messages = None
        else:
            messages = [{"role": m["role"], "content": m["content"]} for m in messages]
            history = sum(len(m["content"]) for m in messages)
            if history > settings.PROMPT_MAX_CHARS:
                raise ValueError(
                    f"'messages' hold {history} characters; at most "
                    f"{settings.PROMPT_MAX_CHARS} are accepted (PROMPT_MAX_CHARS)"
                )
        if text in (None, "") and messages:
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'prompt'")
    if len(text) > settings.PROMPT_MAX_CHARS:
        raise ValueError(
            f"the prompt is {len(text)} characters; at most {settings.PROMPT_MAX_CHARS} are "
            "accepted (PROMPT_MAX_CHARS)"
        )
    split = record.get("split") or Split.TRAIN
    if split not in Split.values:
        raise ValueError(f"split must be one of {', '.join(Split.values)}, not {split!r}")
    reference = record.get("reference") or ""
    if not isinstance(reference, str):
        raise ValueError("'reference' must be a string")
    if len(reference) > settings.RESPONSE_MAX_CHARS:
        raise ValueError(
            f"the reference is {len(reference)} characters; at most "
            f"{settings.RESPONSE_MAX_CHARS} are accepted (RESPONSE_MAX_CHARS)"
        )
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            raise ValueError("'metadata' is not valid JSON") from None
        problem = limits.value_problem(metadata)
        if problem:
            raise ValueError(f"'metadata' {problem}")
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
        reader = csv.DictReader(io.StringIO(content, newline=""))
        try:
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
        except csv.Error as exc:
            raise InvalidInput(
                f"line {reader.line_num}: not readable as CSV: {exc}", code="import_invalid"
            ) from None
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


@dataclass
class PairRow:
    prompt: PromptRow
    response_a: str
    response_b: str
    priority: float
    #: The known answer of a gold pair (issue 20): "A", "B", "tie" or "both_bad".
    gold: str | None = None


def _parse_pair_record(record: Any) -> PairRow:
    """One pair row: the prompt's fields (``prompt`` or ``messages``...), two different
    non-empty responses of at most ``RESPONSE_MAX_CHARS``, an optional finite ``priority``."""
    prompt = _parse_prompt_record(record)
    a, b = record.get("response_a"), record.get("response_b")
    for name, value in (("response_a", a), ("response_b", b)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"missing or empty '{name}'")
        if len(value) > settings.RESPONSE_MAX_CHARS:
            raise ValueError(
                f"'{name}' is {len(value)} characters; at most {settings.RESPONSE_MAX_CHARS} "
                "are accepted (RESPONSE_MAX_CHARS)"
            )
    if a == b:
        raise ValueError("needs two different responses: 'response_a' and 'response_b' are equal")
    raw = record.get("priority", 0.0)
    try:
        if isinstance(raw, bool):
            raise TypeError
        priority = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"'priority' must be a number, not {raw!r}") from None
    if not math.isfinite(priority):
        raise ValueError(f"'priority' must be a finite number, not {raw!r}")
    gold = record.get("gold")
    if gold in (None, ""):
        gold = None
    elif gold not in {c.value for c in Choice}:
        raise ValueError(
            f"'gold' must be one of {', '.join(c.value for c in Choice)}, not {gold!r}"
        )
    return PairRow(prompt=prompt, response_a=a, response_b=b, priority=priority, gold=gold)


def parse_pair_records(
    records: list[Any],
    *,
    unit: str = "line",
    lines: list[int] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> list[PairRow]:
    """Every pair row parsed, or InvalidInput listing every bad one (``details``), with
    ``errors`` found before (unparsable lines) among them, in line order."""
    rows: list[PairRow] = []
    errors = list(errors or [])
    for i, record in enumerate(records):
        try:
            rows.append(_parse_pair_record(record))
        except ValueError as exc:
            errors.append({"line": lines[i] if lines else i + 1, "error": str(exc)})
    errors.sort(key=lambda e: e["line"])
    if not rows and not errors:
        raise InvalidInput("The file holds no pairs.", code="import_empty")
    return checked_rows(rows, errors, unit=unit)


@transaction.atomic
def comparisons_import_pairs(
    *, campaign: Campaign, pairs: list[Any], source: str = "imported"
) -> int:
    """Queue comparisons of existing responses: ``[{prompt, response_a, response_b, ...}]``.

    For plain A/B campaigns without a policy (and the demo before live generation). Every
    bad row is listed (``import_invalid``, ``details: [{line, error}]``) and none is
    imported. A pair with ``messages`` keeps its whole chat history on its prompt; pairs
    with the same prompt text, split and history share one prompt.
    """
    if not pairs:
        return 0
    rows = pairs if all(isinstance(p, PairRow) for p in pairs) else parse_pair_records(pairs)
    prompts: dict[tuple[str, str, str], Prompt] = {}
    for existing in Prompt.objects.filter(
        campaign=campaign, text__in={r.prompt.text for r in rows}
    ):
        prompts.setdefault(_prompt_key(existing.text, existing.split, existing.messages), existing)
    created = 0
    for row in rows:
        p = row.prompt
        key = _prompt_key(p.text, p.split, p.messages)
        prompt = prompts.get(key)
        if prompt is None:
            prompt = prompts[key] = Prompt.objects.create(
                campaign=campaign,
                text=p.text,
                split=p.split,
                reference=p.reference,
                messages=p.messages,
                metadata=p.metadata,
            )
        resp_a = Response.objects.create(prompt=prompt, text=row.response_a, source=source)
        resp_b = Response.objects.create(prompt=prompt, text=row.response_b, source=source)
        if row.gold is not None:
            # A gold pair (its answer known): mixed into annotators' queues, never trained on.
            from rlhf_platform.raters.services import gold_pair_create

            gold_pair_create(
                campaign=campaign,
                prompt=prompt,
                response_a=resp_a,
                response_b=resp_b,
                answer=row.gold,
            )
            created += 1
            continue
        Comparison.objects.create(
            campaign=campaign,
            prompt=prompt,
            response_a=resp_a,
            response_b=resp_b,
            acquisition_rule=AcquisitionRule.IMPORTED,
            priority=row.priority,
            labels_required=campaign.labels_per_comparison,
        )
        created += 1
    return created


def _prompt_key(text: str, split: str, messages: list | None) -> tuple[str, str, str]:
    return (text, split, json.dumps(messages or None, sort_keys=True))
