"""Import response pairs to label (a plain A/B campaign, no policy): every pair or none."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from rlhf_platform.accounts.models import User
from rlhf_platform.campaigns.services import campaign_create
from rlhf_platform.datafiles import formats, imports
from rlhf_platform.datafiles.management.commands._common import campaign_arg, progress_bar
from rlhf_platform.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Queue pairs {prompt, response_a, response_b, [split, reference, priority]} from a "
        "JSONL, CSV or Parquet file, into an existing campaign or a new plain A/B one "
        "(--create NAME --owner USERNAME)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--campaign", help="Existing campaign id or name.")
        target.add_argument("--create", metavar="NAME", help="Create a plain A/B campaign.")
        parser.add_argument("--owner", help="Username of the new campaign's owner.")
        parser.add_argument("--overlap", type=int, default=1, help="Labels per pair.")
        parser.add_argument(
            "--format", dest="fmt", choices=formats.IMPORT_FORMATS, help="Default: from the name."
        )

    def handle(self, *args, file, campaign, create, owner, overlap, fmt, **options):
        try:
            fmt = formats.format_from_name(file.name, fmt)
            data = file.read_bytes()
            with transaction.atomic():  # a bad file leaves no new, empty campaign behind
                n, target = self._import(data, fmt, campaign, create, owner, overlap)
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        except OSError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Queued {n} pairs in {target.name} (id {target.pk}).")

    def _import(self, data, fmt, campaign, create, owner, overlap):
        if create:
            user = User.objects.filter(username=owner or "").first()
            if user is None:
                raise CommandError("--create needs --owner, an existing researcher.")
            # A plain A/B campaign: no policy backend, so it runs no rounds.
            target = campaign_create(
                owner=user,
                name=create,
                algorithm="offline",
                acquisition_rule="imported",
                labels_per_comparison=overlap,
            )
        else:
            target = campaign_arg(campaign)
        with progress_bar(None, "pairs", "pair", self.stderr) as advance:
            n = imports.pairs_import_file(campaign=target, data=data, fmt=fmt, progress=advance)
        return n, target
