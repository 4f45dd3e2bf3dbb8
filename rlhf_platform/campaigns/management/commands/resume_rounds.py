"""Resume round steps that a stopped worker left claimed (the embedded demo, at start)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from rlhf_platform.rounds.services import rounds_resume_interrupted


class Command(BaseCommand):
    help = (
        "Release the claims of round steps whose worker was stopped (Ctrl-C, a crash) and "
        "send the steps again, so that they resume at once. Run it only while no worker "
        "of this database runs: `make demo` does, before it starts its own."
    )

    def handle(self, *args, **options):
        resumed = rounds_resume_interrupted()
        for rnd in resumed:
            self.stdout.write(
                f"Resuming round {rnd.index} of campaign {rnd.campaign_id} at {rnd.state}."
            )
        if not resumed:
            self.stdout.write("No interrupted round to resume.")
