"""Fixtures of the raters tests: the API tests' client factory, and a started campaign whose
annotator is served gold pairs half of the time (the gold-leak tests of the API and the page)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.services import campaign_set_state, comparisons_import_pairs
from rlhf_platform.raters.models import GoldPair
from rlhf_platform.raters.services import gold_rate_set
from tests.conftest import make_campaign
from tests.rlhf_platform.api.conftest import client_for

__all__ = ["client_for", "gold_campaign", "started_gold_campaign"]


@dataclass
class GoldCampaign:
    campaign: Campaign
    gold_ids: set[int]  # the comparisons that are gold pairs


def started_gold_campaign(owner, members, *, pairs: int, gold: int) -> Campaign:
    """A started campaign of `pairs` ordinary pairs and `gold` gold ones (known answer "A")."""
    campaign = make_campaign(owner, members=members, pairs=pairs, start=False)
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[
            {
                "prompt": f"Known {i}?",
                "response_a": f"yes {i}",
                "response_b": f"no {i}",
                "gold": "A",
            }
            for i in range(gold)
        ],
    )
    campaign_set_state(campaign=campaign, action="start")
    return campaign


@pytest.fixture
def gold_campaign(researcher, annotator, monkeypatch) -> GoldCampaign:
    """Four ordinary pairs and four gold ones, gold rate 0.5, started; the views' draws (shown
    order, gold or not) seeded so that both kinds are served."""
    campaign = started_gold_campaign(researcher, (annotator,), pairs=4, gold=4)
    gold_rate_set(actor=researcher, campaign=campaign, rate=0.5)
    seeded = random.Random(4)  # the views draw the order and the gold from SystemRandom
    monkeypatch.setattr(random, "SystemRandom", lambda: seeded)
    return GoldCampaign(campaign, set(GoldPair.objects.values_list("comparison_id", flat=True)))
