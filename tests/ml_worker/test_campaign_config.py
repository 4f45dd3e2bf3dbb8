"""The torch-free config checks (ml_worker/core/campaign_config.py) agree with what the
worker builds: learner.PolicySpec for policy_config, ENNConfig for reward_config."""

from __future__ import annotations

import pytest

from ml_worker.core import campaign_config, learner
from ml_worker.core.enn import ENNConfig as EnnModuleConfig
from ml_worker.core.enn_config import ENNConfig

POLICY_CONFIGS = [
    {"backend": "tiny"},
    {"backend": "tiny", "max_new_tokens": 6, "eval_prompts": 2, "lr": 0.01},
    {"backend": "smollm2", "top_k": 5, "nudge": 0.2},
    {"backend": "hf", "path": "/models/x"},
    {"backend": "hf"},
    {"backend": "pool", "path": "p", "kl_coef": 0.1},
    {"backend": "pool"},
    {"backend": "pool", "path": "p", "top_k": 5},
    {"backend": "nope"},
    {"lr": 0.1},
    {"backend": "tiny", "unknown": 1},
    {"backend": "tiny", "policy_steps": 0},
    {"backend": "tiny", "policy_steps": None},
]


def test_the_learner_accepts_every_option_the_check_lists_and_no_other():
    for key in campaign_config.LM_OPTIONS + campaign_config.RUN_OPTIONS:
        if key in ("backend", "path"):
            continue
        value = "x" if key == "models_dir" else 2
        learner.PolicySpec.from_config({"backend": "tiny", key: value})  # accepted
    with pytest.raises(learner.LearnerConfigError, match="unknown"):
        learner.PolicySpec.from_config({"backend": "tiny", "lora_rank": 2})


@pytest.mark.parametrize("config", POLICY_CONFIGS)
def test_the_policy_check_refuses_what_the_learner_refuses(config):
    try:
        learner.PolicySpec.from_config(config)
    except learner.LearnerConfigError as exc:
        assert campaign_config.policy_config_problem(config) == str(exc)
    else:
        assert campaign_config.policy_config_problem(config) is None


def test_enn_config_is_one_class_reexported_by_the_torch_module():
    assert EnnModuleConfig is ENNConfig


@pytest.mark.parametrize(
    "config",
    [{}, {"num_particles": 4}, {"num_particles": 0}, {"bootstrap": "x"}, {"particles": 3}],
)
def test_the_reward_check_refuses_what_the_trainer_refuses(config):
    try:
        learner.new_reward_trainer(config, feature_dim=4, seed=0)
    except learner.LearnerConfigError:
        assert campaign_config.reward_config_problem(config) is not None
    else:
        assert campaign_config.reward_config_problem(config) is None


def test_the_checks_import_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; import ml_worker.core.campaign_config; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
