"""Policy backends behind one interface (`base.Policy`).

Imports are lazy so that `PoolPolicy` users do not pay for importing transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_worker.core.policies.base import Policy
    from ml_worker.core.policies.lm import LMPolicy, load_causal_lm, load_smollm2
    from ml_worker.core.policies.pool import PoolPolicy
    from ml_worker.core.policies.tiny import tiny_causal_lm

__all__ = ["LMPolicy", "Policy", "PoolPolicy", "load_causal_lm", "load_smollm2", "tiny_causal_lm"]

_WHERE = {
    "Policy": "base",
    "LMPolicy": "lm",
    "load_causal_lm": "lm",
    "load_smollm2": "lm",
    "PoolPolicy": "pool",
    "tiny_causal_lm": "tiny",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
