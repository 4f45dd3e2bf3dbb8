"""Forms of the labeling page: the shape of what is posted; the services judge the rest."""

from __future__ import annotations

import secrets

from django import forms
from django.conf import settings

from rlhf_platform.labeling.models import Choice, Lease
from rlhf_platform.labeling.services import IDEMPOTENCY_KEY_MAX

# A day: anything longer is a clock error, not the time someone took.
TIME_TAKEN_MAX_MS = 24 * 3600 * 1000


def new_idempotency_key(lease: Lease) -> str:
    """A key for one rendering of the labeling form of ``lease``.

    The same rendered form posted twice (double click, a retried request) carries the same
    key, so the service stores one label; the lease id in the key keeps it unique per lease
    and the nonce unguessable.
    """
    return f"ui-{lease.pk}-{secrets.token_urlsafe(16)}"


class LabelForm(forms.Form):
    choice = forms.ChoiceField(choices=Choice.choices)
    idempotency_key = forms.CharField(max_length=IDEMPOTENCY_KEY_MAX, widget=forms.HiddenInput)
    rationale = forms.CharField(
        required=False,
        strip=True,
        max_length=settings.RATIONALE_MAX_LENGTH,
        label="Rationale",
        widget=forms.Textarea(attrs={"rows": 2, "aria-describedby": "rationale-help"}),
    )
    time_taken_ms = forms.IntegerField(
        required=False, min_value=0, max_value=TIME_TAKEN_MAX_MS, widget=forms.HiddenInput
    )
