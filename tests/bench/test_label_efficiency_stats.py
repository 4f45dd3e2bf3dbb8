"""The label-efficiency benchmark's statistics and environments (PROTOCOL.md): fixed targets,
bootstrap intervals over seeds, verdicts, the tuning grid's edge rule, the in-distribution
start, the explained variance and the reward model's accuracy on the policy's top candidates."""

import math

import pytest
import torch

from bench.label_efficiency import cli, report, sim
from bench.label_efficiency.env import PoolEnv, initial_logits
from bench.label_efficiency.explained import explained_variance
from ml_worker.core.enn import ENNConfig, ENNTrainer
from ml_worker.core.policies.pool import PoolPolicy

BUDGETS = [64, 128, 256, 512]


def _curve(rates: list[float]) -> list[dict]:
    return [{"labels": n, "win_rate": w} for n, w in zip(BUDGETS, rates, strict=True)]


FAST = [_curve([0.50, 0.60, 0.70, 0.80]), _curve([0.52, 0.62, 0.72, 0.82])]
SLOW = [_curve([0.50, 0.52, 0.56, 0.60]), _curve([0.50, 0.54, 0.58, 0.62])]


def test_a_ratio_of_labels_needed_has_its_bootstrap_interval_around_it():
    r = report.bootstrap_ratio(SLOW, FAST, 0.6, resamples=400)
    need_fast = report.labels_to_reach(report.mean_curve(FAST), 0.6)
    need_slow = report.labels_to_reach(report.mean_curve(SLOW), 0.6)
    assert r["ratio"] == pytest.approx(need_slow / need_fast)
    assert r["low"] <= r["ratio"] <= r["high"]
    assert r["low"] > 1  # every resample of these curves favours FAST


def test_a_target_one_never_reaches_makes_an_infinite_ratio_and_none_when_neither():
    r = report.bootstrap_ratio(SLOW, FAST, 0.75, resamples=200)
    assert math.isinf(r["ratio"]) and math.isinf(r["high"])
    assert report.bootstrap_ratio(SLOW, SLOW, 0.95, resamples=50)["ratio"] is None


def test_verdicts_follow_the_interval():
    assert report.verdict(1.2, 3.0) == "better"
    assert report.verdict(0.2, 0.9) == "worse"
    assert report.verdict(0.8, 1.3) == "equal (not distinguishable)"
    assert report.verdict(None, None) == "neither reaches the target"


def test_the_target_table_marks_ratios_reached_at_the_first_budget_as_censored():
    table = report.target_table({"offline": SLOW, "online": FAST, "infomax": FAST}, (0.5, 0.6))
    assert table["labels"]["offline"][0] == 64  # reached at the first budget
    assert table["ratios"]["offline/infomax"][0]["censored"] is True
    assert table["ratios"]["offline/infomax"][1]["censored"] is False
    assert table["seeds_reaching"]["offline"] == [2, 2]


def test_win_rate_differences_per_budget_have_intervals():
    rows = report.bootstrap_difference(FAST, SLOW, resamples=300)
    assert [r["labels"] for r in rows] == BUDGETS
    assert rows[0]["difference"] == pytest.approx(0.01)
    assert rows[-1]["difference"] == pytest.approx(0.20)
    assert all(r["low"] <= r["difference"] <= r["high"] for r in rows)


def test_the_tuning_grid_grows_only_where_the_choice_is_on_an_edge():
    window = cli.start_window("infomax")
    (lr_lo, lr_hi), (n_lo, n_hi) = window
    assert cli.extend(window, (lr_lo + 1, n_lo + 1), "infomax") == window  # inside: no growth
    grown = cli.extend(window, (lr_lo, n_hi - 1), "infomax")
    assert grown == ((lr_lo - 1, lr_hi), (n_lo, n_hi + 1))
    full = ((0, len(cli.LR_LADDER)), (0, len(cli.NUDGE_LADDER)))
    assert cli.extend(full, (0, 0), "infomax") == full  # the ladder ends: nothing to add


def test_the_in_distribution_start_is_the_length_normalized_likelihood():
    # columns: summed response log-prob, response tokens, end-of-turn log-prob
    loglik = torch.tensor([[[-10.0, 5.0, -1.0], [-20.0, 96.0, -3.0]]])
    logits = initial_logits(loglik, torch.tensor([[5, 96]]), torch.tensor(96))
    # stopped before the cap: the end token counts; at the cap: it does not
    assert logits[0].tolist() == pytest.approx([-11.0 / 6.0, -20.0 / 96.0])


def test_explained_variance_is_high_for_a_linear_oracle_and_low_for_noise():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(40, 8, 6, generator=g)
    w = torch.randn(6, generator=g)
    train, test = torch.arange(30), torch.arange(30, 40)
    linear = explained_variance(features, features @ w, train, test)
    assert linear["r2"] > 0.99 and linear["r2_within"] > 0.99
    noise = explained_variance(features, torch.randn(40, 8, generator=g), train, test)
    assert noise["r2_within"] < 0.2


def test_top_candidate_accuracy_scores_the_reward_model_on_the_policys_likely_candidates():
    env = PoolEnv.synthetic(prompts=6, candidates=8, dim=4, seed=2)
    policy = PoolPolicy(env.pool, env.features, env.prompts)
    trainer = ENNTrainer(ENNConfig.from_dict({"feature_dim": 4, "num_particles": 2}))
    idx = torch.arange(6)
    # a reward model whose point estimate is the oracle itself is always right
    trainer.model.point = _oracle_point(env)
    assert sim.top_candidate_accuracy(env, trainer, policy, idx) == 1.0
    trainer.model.point = lambda x: -_oracle_point(env)(x)  # reversed: always wrong
    assert sim.top_candidate_accuracy(env, trainer, policy, idx) == 0.0


def _oracle_point(env: PoolEnv):
    """A point head that returns the oracle's reward of the candidate with these features."""
    flat_f = env.features.reshape(-1, env.features.shape[-1])
    flat_r = env.rewards.reshape(-1)

    def point(x: torch.Tensor) -> torch.Tensor:
        match = (x[:, None, :] == flat_f[None, :, :]).all(-1).float().argmax(dim=1)
        return flat_r[match]

    return point
