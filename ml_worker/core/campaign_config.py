"""Checks of a campaign's ``policy_config`` and ``reward_config``, torch-free, so that a
campaign is refused when it is created (API, spec file, "New campaign" page, admin) rather
than discovered as a failed round in a worker.

The keys and rules are those of :class:`ml_worker.core.learner.PolicySpec` (which builds the
policy in the worker) and :class:`ml_worker.core.enn_config.ENNConfig`;
``tests/ml_worker/test_campaign_config.py`` keeps the two in step. What only the worker can
know (that ``path`` holds a model or a pool package) is still checked there.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from ml_worker.core.enn_config import ENNConfig

BACKENDS = ("tiny", "smollm2", "hf", "pool")
#: Options passed to the language-model policy (``LMPolicy``).
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
#: Options of the run itself, for every backend.
RUN_OPTIONS = ("backend", "path", "seed", "nudge", "policy_steps", "eval_prompts", "models_dir")
#: The LM options that also apply to the pool policy.
POOL_OPTIONS = ("lr", "kl_coef", "ema_decay", "grad_clip")

_INTS: tuple[str, ...] = (
    "seed",
    "policy_steps",
    "eval_prompts",
    "top_k",
    "max_new_tokens",
    "lora_r",
)
_INTS += ("gen_batch_size", "train_batch_size")
_NUMBERS = ("nudge", "temperature", "lr", "kl_coef", "ema_decay", "lora_alpha", "grad_clip")
_STRINGS = ("backend", "path", "models_dir")
_POSITIVE: tuple[str, ...] = ("policy_steps", "top_k", "max_new_tokens", "lora_r")
_POSITIVE += ("gen_batch_size", "train_batch_size", "temperature", "lr")


def policy_config_problem(config: dict[str, Any]) -> str | None:
    """Why ``config`` cannot build a policy, or None. An empty config is a campaign without
    rounds (pairs imported for plain A/B labeling)."""
    if not config:
        return None
    unknown = sorted(set(config) - set(LM_OPTIONS) - set(RUN_OPTIONS))
    if unknown:
        return f"unknown policy_config key(s): {unknown}"
    backend = config.get("backend")
    if backend not in BACKENDS:
        return "policy_config.backend must be 'tiny', 'smollm2', 'hf' or 'pool'"
    if backend in ("hf", "pool") and not config.get("path"):
        return f"policy_config.path is required with backend {backend!r}"
    if backend == "pool":
        lm_only = sorted(set(config) & (set(LM_OPTIONS) - set(POOL_OPTIONS)))
        if lm_only:
            return f"policy_config key(s) {lm_only} do not apply to 'pool'"
    for key, value in config.items():
        if key == "policy_steps" and value is None:
            continue  # the default: one step per round so far (ml_worker.core.rounds)
        if key in _STRINGS and not isinstance(value, str):
            return f"policy_config.{key} must be a string, not {value!r}"
        if key in _INTS and (isinstance(value, bool) or not isinstance(value, int)):
            return f"policy_config.{key} must be a whole number, not {value!r}"
        if key in _NUMBERS and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"policy_config.{key} must be a number, not {value!r}"
        if key in _POSITIVE and value <= 0:
            return f"policy_config.{key} must be above 0, not {value!r}"
    return None


def reward_config_problem(config: dict[str, Any]) -> str | None:
    """Why ``config`` cannot build the ENN reward model, or None. ``feature_dim`` comes from
    the policy's backbone; ``seed`` from the campaign when it is not given."""
    if "feature_dim" in config:
        return "reward_config.feature_dim is taken from the policy's backbone; leave it out"
    known = {f.name for f in fields(ENNConfig)} - {"feature_dim"}
    unknown = sorted(set(config) - known)
    if unknown:
        return f"unknown reward_config key(s): {unknown}; allowed: {sorted(known)}"
    for key, value in config.items():
        default = next(f.default for f in fields(ENNConfig) if f.name == key)
        if isinstance(default, tuple):
            ok = isinstance(value, list | tuple) and all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in value
            )
            expected = "a list of positive whole numbers"
        elif isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            expected = "a whole number"
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            expected = "a number"
        else:
            ok, expected = isinstance(value, str), "a string"
        if not ok:
            return f"reward_config.{key} must be {expected}, not {value!r}"
    try:
        ENNConfig.from_dict({"feature_dim": 1, **config})
    except (TypeError, ValueError) as exc:
        return f"reward_config: {exc}"
    return None
