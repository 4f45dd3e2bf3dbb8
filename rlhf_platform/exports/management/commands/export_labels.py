"""Write every label of a campaign, with its provenance, as JSONL, CSV or Parquet."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from rlhf_platform.exports import services
from rlhf_platform.exports.management.commands._common import campaign_arg, progress_bar


class Command(BaseCommand):
    help = "Export all labels with provenance (annotator or judge, shown order, acquisition "
    "rule and score, model versions, timestamps) as JSONL, CSV or Parquet."

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="Campaign id or name.")
        parser.add_argument("-o", "--output", default="-", help="File to write ('-': stdout).")
        parser.add_argument(
            "--format", dest="fmt", choices=services.LABEL_FORMATS, help="Default: from -o."
        )
        parser.add_argument("--source", choices=services.LABEL_SOURCES, default="all")

    def handle(self, *args, campaign, output, fmt, source, **options):
        campaign = campaign_arg(campaign)
        fmt = fmt or ("jsonl" if output == "-" else services.format_from_name(output))
        if fmt == "parquet" and output == "-":
            raise CommandError("Parquet needs a file: give -o labels.parquet.")
        total = services.labels_count(campaign=campaign, source=source)
        if total == 0:
            raise CommandError(
                f"Nothing to export: no labels match (campaign {campaign.pk}, source "
                f"{source}); no file written."
            )
        rows = services.label_records(campaign=campaign, source=source)
        with progress_bar(total, "labels", "label", self.stderr) as advance:
            if output == "-":
                n = services.write_labels(rows, sys.stdout.buffer, fmt, advance)
            else:
                with open(output, "wb") as out:
                    n = services.write_labels(rows, out, fmt, advance)
        self.stderr.write(f"Wrote {n} labels as {fmt}.")
