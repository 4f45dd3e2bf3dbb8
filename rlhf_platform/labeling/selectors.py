"""Reads of comparisons and leases, through the caller's permissions."""

from __future__ import annotations

from django.db.models import QuerySet

from rlhf_platform.accounts.models import User
from rlhf_platform.errors import NotFound
from rlhf_platform.labeling.models import Label, Lease


def get_lease_for_annotator(user: User, lease_id: int, *, for_update: bool = False) -> Lease:
    """The caller's own lease. Another annotator's lease is reported as not found."""
    qs: QuerySet[Lease] = Lease.objects.filter(pk=lease_id, annotator=user)
    if for_update:
        qs = qs.select_for_update()
    lease = qs.select_related("comparison").first()
    if lease is None:
        raise NotFound("No such lease.", code="lease_not_found")
    return lease


def lease_display(lease: Lease) -> dict:
    """What the annotator sees: responses in the lease's shown order, never the mapping."""
    comparison = lease.comparison
    left, right = comparison.response_a, comparison.response_b
    if lease.swapped:
        left, right = right, left
    prompt = comparison.prompt
    return {
        "lease_id": lease.pk,
        "campaign_id": lease.campaign_id,
        "expires_at": lease.expires_at,
        "prompt": prompt.text,
        "messages": prompt.messages,
        "response_a": left.text,
        "response_b": right.text,
    }


def get_label_for_annotator(user: User, label_id: int) -> Label:
    """The caller's own label. Another annotator's label is reported as not found."""
    label = Label.objects.filter(pk=label_id, annotator=user).first()
    if label is None:
        raise NotFound("No such label.", code="label_not_found")
    return label


def cut_off_at(response, policy_config: dict) -> int | None:
    """The generation limit a policy response stopped at (it was cut off there), or None.

    A response's token count includes the end-of-sequence token when the policy stopped by
    itself, so a count at the campaign's ``max_new_tokens`` means the limit cut it.
    """
    limit = policy_config.get("max_new_tokens") if isinstance(policy_config, dict) else None
    backend = policy_config.get("backend") if isinstance(policy_config, dict) else None
    if backend in (None, "", "pool") or response.source != "policy":
        return None
    if limit is None:
        limit = 64  # ml_worker.core.learner's default
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        return None
    return limit if response.token_count >= limit > 0 else None
