"""The label-efficiency benchmark measures the product: one configuration run as a platform
campaign (database rows, judge tasks, model versions on disk; once in process, once on a real
Celery worker with PostgreSQL and Redis) gives the same win rate after every round as the
in-process simulation `sim.run` with the same seed.

The environment is small but real: the first prompts of the committed pool with 8 of their
SmolLM2 responses each (duplicates included), random learner features, and the oracle judge
(hashing encoder, so the test loads no model). The budget of 10 labels at B = 4 ends in the
middle of the third round, so the two must also agree on budgets counted in labels.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from django.conf import settings
from django.db import connection

from bench.label_efficiency import parity, sim
from bench.label_efficiency.env import DEFAULT_POOL, PoolEnv, read_pool
from rlhf_platform.campaigns.models import Campaign, CampaignState
from rlhf_platform.labeling.models import Label
from rlhf_platform.rounds.models import RoundState
from rlhf_platform.rounds.services import campaign_run_inline

JUDGE = {"kind": "oracle", "encoder": "hashing", "temperature": 1.0}
SETUP = sim.Setup(
    prompts_per_round=4,
    samples_per_prompt=4,
    periodic_tau=2,
    reward={
        "num_particles": 8,
        "point_hidden": [16, 16],
        "prior_hidden": [8],
        "diff_hidden": [8],
        "gradient_steps": 2,
        "refit_epochs": 3,
    },
)
HP = sim.Hparams(policy_lr=0.3, nudge=0.1, kl_coef=0.1)
BUDGET = 10  # 4 + 4 + 2 labels
TRAIN_IDS = [f"{kind}-00" for kind in ("advice", "explanation", "how-to", "factual", "creative")]
TRAIN_IDS += ["reasoning-00"]
EVAL_IDS = ["advice-04", "explanation-04", "how-to-04"]


@pytest.fixture(scope="module")
def env() -> PoolEnv:
    by_id = {r["prompt_id"]: r for r in read_pool(DEFAULT_POOL)}
    rows = [by_id[i] for i in TRAIN_IDS + EVAL_IDS]  # the pool's first rows; it only grows
    base = PoolEnv(
        prompts=[r["prompt"] for r in rows],
        splits=[r["split"] for r in rows],
        pool=[[x["text"] for x in r["responses"][:8]] for r in rows],
        features=torch.randn(len(rows), 8, 8, generator=torch.Generator().manual_seed(0)),
        rewards=torch.zeros(len(rows), 8),
        references=[f"reference {i}" for i in range(len(rows))],
    )
    # Features are a function of the text, as the platform's featurizers make them.
    for p, cands in enumerate(base.pool):
        first = {}
        for c, text in enumerate(cands):
            base.features[p, c] = base.features[p, first.setdefault(text, c)]
    return dataclasses.replace(base, rewards=parity.oracle_rewards(base, JUDGE))


@pytest.fixture(scope="module")
def env_in(env) -> PoolEnv:
    """The in-distribution form: an initial policy of its own (a function of the text, as
    SmolLM2's likelihood is) and per-prompt offsets; duplicate texts share their offset."""
    base = torch.tensor([[(len(t) % 7) / 3.0 for t in cands] for cands in env.pool])
    return dataclasses.replace(env, base_logits=base, per_prompt=True)


@pytest.fixture
def package(env, tmp_path, settings):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    return parity.write_pool_package(env, tmp_path / "pool-package")


def _campaign(researcher, env, package, name: str, algorithm: str = "infomax") -> Campaign:
    fields = parity.campaign_fields(
        env, algorithm, HP, SETUP, seed=3, budget=BUDGET, package=package, judge_config=JUDGE
    )
    return parity.create_campaign(researcher, name, env, **fields)


def _in_process(env, algorithm: str = "infomax") -> list[dict]:
    return parity.sim_win_rates(env, algorithm, HP, SETUP, seed=3, budget=BUDGET)


def test_the_environment_has_duplicate_texts_and_a_learnable_signal(env):
    assert any(len(set(c)) < len(c) for c in env.pool)  # the text-keyed paths are exercised
    assert env.rewards.std() > 0.1


#: Rounds (0-based) after which each algorithm's campaign has a new policy: 3 rounds, tau 2.
POLICY_ROUNDS = {
    "offline": [2],  # only at its last round
    "periodic": [1, 2],  # after round tau - 1, then at the last
    "online": [0, 1, 2],
    "online_no_nudge": [0, 1, 2],
    "infomax": [0, 1, 2],
    "double_ts": [0, 1, 2],
}
LABELS_AFTER = [4, 8, 10]


@pytest.mark.django_db
@pytest.mark.parametrize("algorithm", list(parity.CAMPAIGN_ALGORITHMS))
def test_a_campaign_run_in_process_matches_the_simulation(researcher, env, package, algorithm):
    assert set(parity.CAMPAIGN_ALGORITHMS) == set(sim.ALGORITHMS)  # every algorithm is covered
    campaign = _campaign(researcher, env, package, f"parity-{algorithm}", algorithm)
    rounds = campaign_run_inline(campaign_id=campaign.pk, rounds=5)
    assert [r.state for r in rounds] == [RoundState.DONE] * 3, [r.failure_reason for r in rounds]
    campaign.refresh_from_db()
    assert campaign.state == CampaignState.FINISHED  # the budget is spent
    assert Label.objects.filter(campaign=campaign).count() == BUDGET

    on_platform = parity.campaign_win_rates(env, campaign, package)
    in_process = _in_process(env, algorithm)
    assert [r["rounds"] for r in on_platform] == [r + 1 for r in POLICY_ROUNDS[algorithm]]
    assert [r["labels"] for r in on_platform] == [LABELS_AFTER[r] for r in POLICY_ROUNDS[algorithm]]
    assert parity.compare(on_platform, in_process) == []
    # the policy moved at each of its refits or steps
    assert all(abs(r["win_rate"] - 0.5) > 1e-6 for r in on_platform)
    assert len({round(r["win_rate"], 6) for r in on_platform}) == len(on_platform)


@pytest.mark.django_db
@pytest.mark.parametrize("algorithm", ["periodic", "double_ts"])
def test_the_in_distribution_form_matches_too(researcher, env_in, tmp_path, settings, algorithm):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    package = parity.write_pool_package(env_in, tmp_path / "pool-package-in")
    campaign = _campaign(researcher, env_in, package, f"parity-in-{algorithm}", algorithm)
    rounds = campaign_run_inline(campaign_id=campaign.pk, rounds=5)
    assert [r.state for r in rounds] == [RoundState.DONE] * 3, [r.failure_reason for r in rounds]
    on_platform = parity.campaign_win_rates(env_in, campaign, package)
    assert parity.compare(on_platform, _in_process(env_in, algorithm)) == []
    assert len(on_platform) == len(POLICY_ROUNDS[algorithm])


@pytest.mark.django_db
def test_a_refit_takes_one_policy_step_per_round_so_far(researcher, env, package):
    """Offline's single refit after 3 rounds optimizes for 3 steps: the policy version's
    optimizer has taken exactly 3 steps, as online has after 3 rounds."""
    from rlhf_platform.rounds.models import ModelKind, ModelVersion
    from rlhf_platform.rounds.services import artifact_path

    campaign = _campaign(researcher, env, package, "parity-steps", "offline")
    campaign_run_inline(campaign_id=campaign.pk, rounds=5)
    version = ModelVersion.objects.get(campaign=campaign, kind=ModelKind.POLICY, round__index=2)
    from ml_worker.core.policies.pool import PoolPolicy

    policy = PoolPolicy.load(artifact_path(version), pool_from=PoolPolicy.load(package))
    assert policy.steps == 3


def test_compare_reports_a_different_round():
    a = [{"labels": 4, "rounds": 1, "win_rate": 0.5}, {"labels": 8, "rounds": 2, "win_rate": 0.6}]
    b = [{"labels": 4, "rounds": 1, "win_rate": 0.5}, {"labels": 8, "rounds": 2, "win_rate": 0.61}]
    assert parity.compare(a, a) == []
    assert parity.compare(a, b) == ["round 2: platform 0.600000000, simulation 0.610000000"]
    assert "labels per round differ" in parity.compare(a, b[:1])[0]


def test_an_unknown_algorithm_is_refused(env, tmp_path):
    with pytest.raises(ValueError, match="unknown algorithm 'magic'"):
        parity.campaign_fields(
            env, "magic", HP, SETUP, seed=0, budget=8, package=tmp_path, judge_config=JUDGE
        )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_campaign_run_on_a_celery_worker_matches_the_simulation(
    researcher, env, package, tmp_path
):
    from rlhf_platform.celery import app
    from tests.rlhf_platform.rounds.test_worker import Worker, _wait

    if connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip(
            "needs PostgreSQL and Redis (make test sets DATABASE_URL and CELERY_BROKER_URL)"
        )
    app.control.purge()
    worker = Worker(tmp_path)
    worker.start()
    try:
        campaign = _campaign(researcher, env, package, "parity-worker")
        _wait(
            lambda: Campaign.objects.get(pk=campaign.pk).state == CampaignState.FINISHED,
            worker,
            300,
            "the campaign to finish",
        )
    finally:
        worker.stop()
    campaign.refresh_from_db()
    assert [r.state for r in campaign.rounds.order_by("index")] == [RoundState.DONE] * 3
    assert parity.compare(parity.campaign_win_rates(env, campaign, package), _in_process(env)) == []
