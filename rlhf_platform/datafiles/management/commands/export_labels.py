"""Write every label of a campaign, with its provenance, as JSONL, CSV or Parquet."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from rlhf_platform.datafiles import exports, formats
from rlhf_platform.datafiles.management.commands._common import campaign_arg, progress_bar


class Command(BaseCommand):
    help = "Export all labels with provenance (annotator or judge, shown order, acquisition "
    "rule and score, model versions, timestamps) as JSONL, CSV or Parquet."

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="Campaign id or name.")
        parser.add_argument("-o", "--output", default="-", help="File to write ('-': stdout).")
        parser.add_argument(
            "--format", dest="fmt", choices=formats.LABEL_FORMATS, help="Default: from -o."
        )
        parser.add_argument("--source", choices=formats.LABEL_SOURCES, default="all")

    def handle(self, *args, campaign, output, fmt, source, **options):
        campaign = campaign_arg(campaign)
        fmt = fmt or ("jsonl" if output == "-" else formats.format_from_name(output))
        if fmt == "parquet" and output == "-":
            raise CommandError("Parquet needs a file: give -o labels.parquet.")
        total = exports.labels_count(campaign=campaign, source=source)
        if total == 0:
            raise CommandError(
                f"Nothing to export: no labels match (campaign {campaign.pk}, source "
                f"{source}); no file written."
            )
        rows = exports.label_records(campaign=campaign, source=source)
        with progress_bar(total, "labels", "label", self.stderr) as advance:
            if output == "-":
                n = exports.write_labels(rows, sys.stdout.buffer, fmt, advance)
            else:
                with open(output, "wb") as out:
                    n = exports.write_labels(rows, out, fmt, advance)
        self.stderr.write(f"Wrote {n} labels as {fmt}.")
