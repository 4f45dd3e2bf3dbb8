"""The rater model recovers known confusions, position bias and speed on synthetic crowds."""

from __future__ import annotations

import numpy as np
import pytest

from ml_worker.core.raters import CHOICES, Thresholds, agreement, fit_raters, wilson

SWAP = {"A": "B", "B": "A", "tie": "tie", "both_bad": "both_bad"}


def _careful(q: float):
    """Right with probability q on preferences; otherwise the other side (or a tie)."""

    def answer(truth: str, first: str, rng) -> str:
        if truth in ("tie", "both_bad"):
            return truth if rng.random() < q else str(rng.choice(["A", "B"]))
        return truth if rng.random() < q else SWAP[truth]

    return answer


def _random(truth: str, first: str, rng) -> str:
    return str(rng.choice(CHOICES))


def _first(truth: str, first: str, rng) -> str:
    return first


def crowd(behaviours: dict[str, object], n_items: int = 400, overlap: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    truths = rng.choice(CHOICES, size=n_items, p=[0.45, 0.45, 0.05, 0.05])
    names = list(behaviours)
    rows = []
    for i, truth in enumerate(truths):
        for r in rng.choice(names, size=overlap, replace=False):
            swapped = bool(rng.random() < 0.5)
            first = "B" if swapped else "A"
            secs = 1.0 if r.startswith("fast") else float(rng.uniform(5, 20))
            rows.append((i, str(r), behaviours[r](str(truth), first, rng), swapped, secs))
    items, raters, choices, swapped, seconds = (list(x) for x in zip(*rows, strict=True))
    return dict(enumerate(truths.tolist())), items, raters, choices, swapped, seconds


BEHAVIOURS = {
    **{f"careful{i}": _careful(0.92) for i in range(5)},
    **{f"noisy{i}": _careful(0.7) for i in range(2)},
    "random0": _random,
    "first0": _first,
    "fast0": _careful(0.92),
}


def test_it_recovers_known_confusions_and_ranks_reliability():
    truth, items, raters, choices, swapped, seconds = crowd(BEHAVIOURS)
    fit = fit_raters(items, raters, choices, swapped, seconds=seconds)
    est = fit.estimates
    # Careful raters: preference accuracy near 0.92, confusion diagonal near 0.92 (shown order).
    for i in range(5):
        e = est[f"careful{i}"]
        assert abs(e.accuracy - 0.92) < 0.06, e.accuracy
        assert e.confusion[0][0] > 0.8 and e.confusion[1][1] > 0.8
        assert e.flags == []
    for i in range(2):
        assert abs(est[f"noisy{i}"].accuracy - 0.7) < 0.1
    # The random clicker's rows are flat; the first-position clicker's column 0 is full.
    rnd = np.array(est["random0"].confusion)
    assert np.all(np.abs(rnd[:2] - 0.25) < 0.12)
    first = np.array(est["first0"].confusion)
    assert first[0][0] > 0.85 and first[1][0] > 0.85
    # Reliability ranks careful > noisy > random / first-position.
    rel = fit.reliability()
    assert min(rel[f"careful{i}"] for i in range(5)) > max(rel["noisy0"], rel["noisy1"])
    assert min(rel["noisy0"], rel["noisy1"]) > max(rel["random0"], rel["first0"])
    lo, hi = est["careful0"].reliability_interval
    assert lo <= rel["careful0"] <= hi
    # The posterior recovers the truth on most items.
    guess = fit.posterior.argmax(1)
    right = np.mean([CHOICES[guess[fit.items.index(i)]] == t for i, t in truth.items()])
    assert right > 0.9


def test_it_flags_spam_position_and_too_fast_with_reasons():
    _, items, raters, choices, swapped, seconds = crowd(BEHAVIOURS)
    est = fit_raters(items, raters, choices, swapped, seconds=seconds).estimates
    codes = {r: {f["code"] for f in e.flags} for r, e in est.items()}
    assert "spam" in codes["random0"]
    assert "position" in codes["first0"] and "spam" in codes["first0"]
    assert codes["fast0"] == {"too_fast"}
    assert all(not codes[f"careful{i}"] for i in range(5))
    assert all(f["reason"] for e in est.values() for f in e.flags)
    first = est["first0"]
    assert first.first_share == 1.0
    assert abs(first.expected_first_share - 0.5) < 0.1 and first.position_bias > 0.4
    assert est["fast0"].median_seconds == 1.0


def test_gold_is_known_truth_and_pins_a_lone_rater():
    """With one rater per item, only gold tells good from bad: a rater who always answers the
    opposite is estimated as wrong, not as the truth."""
    rng = np.random.default_rng(1)
    truths = {i: str(rng.choice(["A", "B"])) for i in range(200)}
    items, raters, choices, swapped = [], [], [], []
    for i, t in truths.items():
        items.append(i)
        raters.append("contrarian")
        choices.append(SWAP[t])
        swapped.append(bool(rng.random() < 0.5))
    gold = {i: truths[i] for i in range(40)}
    fit = fit_raters(items, raters, choices, swapped, gold=gold)
    e = fit.estimates["contrarian"]
    assert e.accuracy < 0.1 and e.n_gold == 40 and e.gold_correct == 0
    for i in range(40):  # gold posteriors stay clamped
        assert fit.posterior[fit.items.index(i)][CHOICES.index(truths[i])] == 1.0


def test_warm_start_converges_in_fewer_iterations_to_the_same_estimates():
    _, items, raters, choices, swapped, seconds = crowd(BEHAVIOURS, n_items=500)
    cut = int(len(items) * 0.95)
    first = fit_raters(items[:cut], raters[:cut], choices[:cut], swapped[:cut])
    cold = fit_raters(items, raters, choices, swapped)
    warm = fit_raters(items, raters, choices, swapped, previous=first.previous())
    assert warm.converged and cold.converged
    assert warm.iterations < cold.iterations
    for r in cold.raters:
        assert abs(warm.estimates[r].accuracy - cold.estimates[r].accuracy) < 0.02


def test_judges_are_raters_and_agreement_counts_pairs():
    items = [1, 1, 2, 2, 2]
    raters = ["user:1", "judge:oracle", "user:1", "user:2", "judge:oracle"]
    choices = ["A", "A", "B", "A", "B"]
    got = agreement(items, raters, choices)
    assert got["user:1"] == (2, 3)
    assert got["judge:oracle"] == (2, 3)
    assert got["user:2"] == (0, 2)


def test_it_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown choice"):
        fit_raters([1], ["r"], ["C"], [False])
    with pytest.raises(ValueError, match="same length"):
        fit_raters([1, 2], ["r"], ["A"], [False])
    with pytest.raises(ValueError, match="gold answer"):
        fit_raters([1], ["r"], ["A"], [False], gold={1: "left"})
    with pytest.raises(ValueError):
        Thresholds(position_share=0.4)


def test_wilson_interval():
    assert wilson(0, 0) is None
    lo, hi = wilson(8, 10)
    assert 0.49 < lo < 0.5 and 0.94 < hi < 0.95
