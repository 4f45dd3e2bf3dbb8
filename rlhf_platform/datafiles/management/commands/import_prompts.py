"""Import prompts into a campaign from a JSONL, CSV or Parquet file: every row or none."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from rlhf_platform.datafiles import formats, imports
from rlhf_platform.datafiles.management.commands._common import campaign_arg, progress_bar
from rlhf_platform.errors import ServiceError


class Command(BaseCommand):
    help = "Import prompts (fields: prompt or messages, split, reference, metadata)."

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="Campaign id or name.")
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--format", dest="fmt", choices=formats.IMPORT_FORMATS, help="Default: from the name."
        )

    def handle(self, *args, campaign, file, fmt, **options):
        campaign = campaign_arg(campaign)
        try:
            fmt = formats.format_from_name(file.name, fmt)
            data = file.read_bytes()
            with progress_bar(None, "prompts", "prompt", self.stderr) as advance:
                n = imports.prompts_import_file(
                    campaign=campaign, data=data, fmt=fmt, progress=advance
                )
        except ServiceError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        except OSError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Imported {n} prompts into {campaign.name}.")
