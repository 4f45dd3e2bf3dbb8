"""A small simulated crowd labeling a campaign through the services: careful annotators, a
random clicker and an always-first clicker, with gold pairs mixed in. Shared by the raters
page tests (views and browser)."""

from __future__ import annotations

import random

from rlhf_platform.campaigns.services import (
    campaign_add_member,
    campaign_create,
    campaign_set_state,
    comparisons_import_pairs,
)
from rlhf_platform.labeling.models import Comparison
from rlhf_platform.labeling.services import NothingToLabel, comparison_next, label_submit
from rlhf_platform.raters.services import gold_rate_set, raters_refit
from tests.conftest import make_user

SWAP = {"A": "B", "B": "A"}


def crowd_campaign(owner, *, pairs: int = 60, gold: int = 8, seed: int = 0, prefix: str = ""):
    rng = random.Random(seed)
    campaign = campaign_create(owner=owner, name=f"{prefix}Crowd", labels_per_comparison=3)
    truth = {}
    rows = []
    for i in range(pairs + gold):
        better = rng.choice("AB")
        row = {
            "prompt": f"Crowd prompt {i}?",
            "response_a": f"{'good' if better == 'A' else 'poor'} answer {i}",
            "response_b": f"{'good' if better == 'B' else 'poor'} answer {i}",
        }
        if i >= pairs:
            row["gold"] = better
        rows.append(row)
    comparisons_import_pairs(campaign=campaign, pairs=rows)
    for c in Comparison.objects.filter(campaign=campaign).select_related("response_a"):
        truth[c.pk] = "A" if c.response_a.text.startswith("good") else "B"
    people = {
        "carla": "careful",
        "cem": "careful",
        "chen": "careful",
        "rudi": "random",
        "fiona": "first",
    }
    users = {}
    for name in people:
        users[name] = make_user(prefix + name)
        campaign_add_member(campaign=campaign, user=users[name])
    campaign_set_state(campaign=campaign, action="start")
    gold_rate_set(actor=owner, campaign=campaign, rate=0.2)
    active = list(people)
    while active:  # in turns, so that everyone labels some of every kind of pair
        rng.shuffle(active)
        for name in list(active):
            kind, user = people[name], users[name]
            try:
                lease = comparison_next(annotator=user, campaign_id=campaign.pk, rng=rng).lease
            except NothingToLabel:
                active.remove(name)
                continue
            right = truth[lease.comparison_id]
            shown_right = SWAP[right] if lease.swapped else right
            if kind == "careful":
                choice = shown_right if rng.random() < 0.9 else SWAP[shown_right]
            elif kind == "random":
                choice = rng.choice(["A", "B", "tie", "both_bad"])
            else:
                choice = "A"
            label_submit(
                annotator=user,
                lease_id=lease.pk,
                choice=choice,
                idempotency_key=f"{name}-{lease.pk}",
                time_taken_ms=900 if kind == "random" else rng.randint(4000, 20000),
            )
    raters_refit(campaign_id=campaign.pk)
    return campaign, users
