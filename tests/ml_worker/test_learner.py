"""`learner`: the campaign's policy_config to learning objects, here the `pool` backend."""

from __future__ import annotations

import pytest
import torch

from ml_worker.core import learner
from ml_worker.core.policies.pool import PoolPolicy


@pytest.fixture
def package(tmp_path):
    features = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0))
    pool = [[f"answer {p}.{c}" for c in range(4)] for p in range(3)]
    path = tmp_path / "package"
    PoolPolicy(pool, features, [f"prompt {p}" for p in range(3)]).save(path)
    return path


def test_the_pool_backend_builds_policy_featurizer_and_reward_width_from_the_package(
    package, tmp_path
):
    spec = learner.PolicySpec.from_config(
        {"backend": "pool", "path": str(package), "lr": 0.2, "kl_coef": 0.0, "nudge": 0.3}
    )
    assert spec.nudge == 0.3 and spec.lm_options == {"lr": 0.2, "kl_coef": 0.0}
    policy = learner.new_policy(spec)
    assert (policy.lr, policy.kl_coef) == (0.2, 0.0)
    assert learner.feature_dim(spec) == 6
    feats = learner.featurizer(spec, tmp_path / "unused").embed(["prompt 1"], ["answer 1.2"])
    assert torch.equal(feats[0], learner.pool_package(str(package)).features[1, 2])

    policy.update(["prompt 1"], ["answer 1.2"], torch.tensor([1.0]))
    policy.save(tmp_path / "v1")
    assert not (tmp_path / "v1" / "pool.json").exists()  # versions name the package
    loaded = learner.load_policy(spec, tmp_path / "v1")
    assert torch.equal(loaded.theta, policy.theta)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"backend": "pool"}, "path is required"),
        ({"backend": "pool", "path": "x", "top_k": 5}, r"\['top_k'\] do not apply to 'pool'"),
        ({"backend": "nope"}, "must be 'tiny', 'smollm2', 'hf' or 'pool'"),
    ],
)
def test_invalid_pool_configs_are_refused_with_the_key_named(config, message):
    with pytest.raises(learner.LearnerConfigError, match=message):
        learner.PolicySpec.from_config(config)


def test_a_missing_pool_package_is_a_config_error(tmp_path):
    spec = learner.PolicySpec.from_config({"backend": "pool", "path": str(tmp_path / "none")})
    with pytest.raises(learner.LearnerConfigError, match="no pool package"):
        learner.new_policy(spec)
