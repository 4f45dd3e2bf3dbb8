"""The seeds of a round: each random choice in round r of a campaign draws from its own seed.

A seed is derived from the campaign's seed, the round's index and a salt naming the purpose,
so that a step re-run from its start after a crash repeats its choices (a judge step resumed
after a crash keeps the labels it stored and draws afresh for the comparisons still waiting,
so only an uninterrupted round is reproduced exactly), and so that the round engine
(`rlhf_platform/rounds/`) and the label-efficiency benchmark's in-process
simulation (`bench/label_efficiency/sim.py`) make the same choices from the same seed: the
benchmark then measures what the platform does (`bench/label_efficiency/parity.py` checks
that they agree).
"""

from __future__ import annotations

# Salts, one per random choice of a round.
PROMPTS = 1  # which B training prompts (random.Random.sample)
SAMPLES = 2  # the policy's K samples per prompt
SELECT = 3  # the acquisition rule's generator (Thompson draws, uniform pairs)
MIXED = 4  # mixed feedback: which comparisons also go to the judge
JUDGE_SWAPS = 5  # the order each pair is shown to the judge in
JUDGE_DRAWS = 6  # the judge's own draws, per batch (see `judge_seed`)
OPTIMIZE = 7  # offline / periodic policy optimization: its prompts
EVALUATE = 8  # the judge's draws during evaluation
OPTIMIZE_SAMPLES = 100  # + step: the samples of each policy-optimization step

#: Comparisons sent to the judge per call; the judge's draws are seeded per batch.
JUDGE_BATCH = 64


def round_seed(campaign_seed: int, round_index: int, salt: int) -> int:
    """The seed of one random choice (`salt`) in round `round_index` of a campaign."""
    return (campaign_seed * 1_000_003 + round_index * 7919 + salt) % (2**31 - 1)


def judge_seed(campaign_seed: int, round_index: int, batch_start: int) -> int:
    """The judge's seed for the batch of the round's comparisons starting at `batch_start`."""
    return round_seed(campaign_seed, round_index, JUDGE_DRAWS) + batch_start
