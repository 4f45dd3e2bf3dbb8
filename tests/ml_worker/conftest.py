"""Shared fixtures of the ML-core tests: tiny randomly initialized models, no downloads."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_lm():
    """A fresh (model, tokenizer) pair: 2-layer Llama, hidden 32, char-level tokenizer.

    Function-scoped because an LMPolicy injects LoRA layers into the model it is given.
    """
    from ml_worker.core.policies.tiny import tiny_causal_lm

    return tiny_causal_lm(seed=0)


@pytest.fixture
def make_tiny_policy():
    """Factory: make_tiny_policy(**LMPolicy kwargs) -> LMPolicy on a fresh tiny model."""
    from ml_worker.core.policies.lm import LMPolicy
    from ml_worker.core.policies.tiny import tiny_causal_lm

    def make(seed: int = 0, **kwargs):
        model, tokenizer = tiny_causal_lm(seed=seed)
        kwargs.setdefault("max_new_tokens", 12)
        return LMPolicy(model, tokenizer, **kwargs)

    return make
