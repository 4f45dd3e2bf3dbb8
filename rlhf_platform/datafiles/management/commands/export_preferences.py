"""Write a campaign's preferences as TRL-ready JSONL (standard or conversational form)."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from rlhf_platform.datafiles import exports, formats
from rlhf_platform.datafiles.management.commands._common import campaign_arg, progress_bar


class Command(BaseCommand):
    help = (
        "Export preferences as JSONL rows {prompt, chosen, rejected} that TRL's preference "
        "trainers read. Ties and both-bad are left out unless --keep-ties (then every row "
        "gets a boolean 'tie' column)."
    )

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="Campaign id or name.")
        parser.add_argument("-o", "--output", default="-", help="File to write ('-': stdout).")
        parser.add_argument("--form", choices=formats.PREFERENCE_FORMS, default="standard")
        parser.add_argument("--source", choices=formats.LABEL_SOURCES, default="all")
        parser.add_argument("--keep-ties", action="store_true")

    def handle(self, *args, campaign, output, form, source, keep_ties, **options):
        campaign = campaign_arg(campaign)
        total = exports.preferences_count(campaign=campaign, keep_ties=keep_ties, source=source)
        if total == 0:
            raise CommandError(
                f"Nothing to export: no preference labels match (campaign {campaign.pk}, source "
                f"{source}); no file written."
            )
        rows = exports.preference_records(
            campaign=campaign, form=form, keep_ties=keep_ties, source=source
        )
        with progress_bar(total, "preferences", "row", self.stderr) as advance:
            if output == "-":
                n = exports.write_jsonl(rows, sys.stdout.buffer, advance)
            else:
                with open(output, "wb") as out:
                    n = exports.write_jsonl(rows, out, advance)
        self.stderr.write(f"Wrote {n} preference rows ({form} form).")
