"""Pairwise judges: a simulated oracle and two API judges behind one interface.

`build_judge({"kind": "oracle" | "gemini" | "openai", ...})` builds one; see docs/judges.md.
The API judges (and their SDKs) are imported only when built or imported directly.
"""

from __future__ import annotations

from ml_worker.core.judges.base import (
    CHOICES,
    Judge,
    JudgeAuthError,
    JudgeConfigError,
    JudgeQuery,
    JudgeResult,
    build_judge,
)

__all__ = [
    "CHOICES",
    "Judge",
    "JudgeAuthError",
    "JudgeConfigError",
    "JudgeQuery",
    "JudgeResult",
    "build_judge",
]
