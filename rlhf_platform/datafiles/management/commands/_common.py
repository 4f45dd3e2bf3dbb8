"""What the export and import commands share: finding the campaign, the progress bar."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from django.core.management.base import CommandError
from tqdm import tqdm

from rlhf_platform.campaigns.models import Campaign


def campaign_arg(value: str) -> Campaign:
    """A campaign by id or by exact name (the CLI runs as the operator: no permission check)."""
    qs = Campaign.objects.filter(pk=int(value)) if value.isdigit() else Campaign.objects.none()
    campaign = qs.first() or Campaign.objects.filter(name=value).first()
    if campaign is None:
        raise CommandError(f"No campaign with id or name {value!r}.")
    return campaign


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str, stream=None):
    """A tqdm bar on the command's stderr, so that stdout stays clean for piping an export.

    ``stream`` is the command's ``self.stderr`` (an ``OutputWrapper``, whose ``write`` adds a
    newline; tqdm gets the stream it wraps, to redraw its line with carriage returns)."""
    out = getattr(stream, "_out", stream) or sys.stderr
    with tqdm(total=total, desc=desc, unit=unit, file=out, dynamic_ncols=True) as bar:
        yield bar.update
