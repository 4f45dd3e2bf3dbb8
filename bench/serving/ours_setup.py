"""Set up one benchmark campaign in our platform (run inside Django, as a subprocess).

``python -m bench.serving.ours_setup --annotators 32 --comparisons 4000 --overlap 3 --name X``
prints JSON ``{"campaign_id", "tokens"}``. Uses the project's own services: the campaign
is a plain A/B one (imported pairs, no rounds), created, filled, joined and started exactly
as ``manage.py import_pairs --create`` and the members/state API endpoints do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pairs(n: int) -> list[dict]:
    """n distinct pairs built from the demo's 30 example pairs."""
    base = [json.loads(x) for x in (ROOT / "data/demo/pairs.jsonl").read_text().splitlines() if x]
    out = []
    for i in range(n):
        p = base[i % len(base)]
        out.append(
            {
                "prompt": f"{p['prompt']} (#{i})",
                "response_a": p["response_a"],
                "response_b": p["response_b"],
            }
        )
    return out


def setup(
    *, annotators: int, comparisons: int, overlap: int, name: str, unit_cost: str = "0.05"
) -> tuple[int, list[str]]:
    """Create, fill and start one campaign; returns its id and one API token per annotator.

    Django must be set up already (see :func:`main`)."""
    from rest_framework.authtoken.models import Token

    from rlhf_platform.accounts.models import Role, User
    from rlhf_platform.campaigns.services import (
        campaign_add_member,
        campaign_create,
        campaign_set_state,
        comparisons_import_pairs,
    )

    owner, _ = User.objects.get_or_create(
        username="bench-researcher", defaults={"role": Role.RESEARCHER}
    )
    campaign = campaign_create(
        owner=owner,
        name=name,
        algorithm="offline",
        acquisition_rule="imported",
        labels_per_comparison=overlap,
        label_cap=comparisons * overlap,
        human_label_cost=Decimal(unit_cost),
    )
    comparisons_import_pairs(campaign=campaign, pairs=pairs(comparisons))
    tokens = []
    for i in range(1, annotators + 1):
        user, created = User.objects.get_or_create(
            username=f"bench-annotator-{i}", defaults={"role": Role.ANNOTATOR}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        campaign_add_member(campaign=campaign, user=user)
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    campaign_set_state(campaign=campaign, action="start")
    return campaign.pk, tokens


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--annotators", type=int, required=True)
    ap.add_argument("--comparisons", type=int, required=True)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--unit-cost", default="0.05")
    ap.add_argument("--name", required=True)
    args = ap.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rlhf_platform.settings")
    import django

    django.setup()
    campaign_id, tokens = setup(
        annotators=args.annotators,
        comparisons=args.comparisons,
        overlap=args.overlap,
        name=args.name,
        unit_cost=args.unit_cost,
    )
    json.dump({"campaign_id": campaign_id, "tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
