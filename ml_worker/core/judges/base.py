"""The judge interface: queries, results, the protocol, retries and the registry.

A judge answers pairwise questions "is response A better than response B for this prompt?".
Every answer is a `JudgeResult` that is either *valid* (a probability that A is preferred and a
choice) or *invalid* (no probability, no choice, and a reason). There is no silent default: a
judge that failed never answers 0.5; callers exclude invalid results and count them.

Kinds, built by `build_judge(config)` from the config's ``"kind"`` key:

- ``"oracle"``: `ml_worker.core.judges.oracle.OracleJudge`, a simulated Bradley-Terry rater.
- ``"gemini"``: `ml_worker.core.judges.gemini.GeminiJudge`, Google's API (google-genai SDK).
- ``"openai"``: `ml_worker.core.judges.openai_judge.OpenAIJudge`, any OpenAI-compatible server.

The API judges are imported lazily so that the oracle (used by tests, demos and benchmarks)
never pulls in the HTTP SDKs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ml_worker.core.choice import JUDGE_CHOICES

if TYPE_CHECKING:
    from ml_worker.core.judges.egress import EgressPolicy

#: What a judge may answer (``ml_worker.core.choice.JUDGE_CHOICES``): A, B or tie.
CHOICES: tuple[str, ...] = tuple(c.value for c in JUDGE_CHOICES)

T = TypeVar("T")


@dataclass(frozen=True)
class JudgeQuery:
    """One pairwise question: which of two responses to ``prompt`` is better.

    ``reference`` is an optional reference answer (a gold answer) the judge may compare with.
    """

    prompt: str
    response_a: str
    response_b: str
    reference: str | None = None

    def swapped(self) -> JudgeQuery:
        """The same question with the two responses in the other order."""
        return JudgeQuery(self.prompt, self.response_b, self.response_a, self.reference)


@dataclass(frozen=True)
class JudgeResult:
    """The judge's answer to one `JudgeQuery`.

    Valid: ``prob_a`` in [0, 1] is the judge's probability that A is preferred (ties count as
    one half), ``choice`` in {"A", "B", "tie"} is the sampled / stated answer, and
    ``invalid_reason`` is None.

    Invalid: ``prob_a`` and ``choice`` are None and ``invalid_reason`` says why (malformed
    answer, refusal, HTTP error after the retry budget, ...). Never counted as 0.5.

    ``tokens_in`` / ``tokens_out`` are the prompt / completion tokens billed for this answer
    (summed over both orders and over attempts that returned usage), for cost accounting.
    ``order_disagreement`` is set only when the judge asked in both orders: True when the two
    answers, mapped back to the original order, disagree. ``raw`` keeps the raw answer
    texts (one per order asked) for audit.
    """

    prob_a: float | None
    choice: str | None
    invalid_reason: str | None
    tokens_in: int = 0
    tokens_out: int = 0
    order_disagreement: bool | None = None
    raw: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.invalid_reason is None:
            if self.prob_a is None or self.choice is None:
                raise ValueError("a valid JudgeResult needs prob_a and choice")
            if not (0.0 <= self.prob_a <= 1.0) or math.isnan(self.prob_a):
                raise ValueError(f"prob_a must lie in [0, 1], got {self.prob_a!r}")
            if self.choice not in CHOICES:
                raise ValueError(f"choice must be one of {CHOICES}, got {self.choice!r}")
        else:
            if not self.invalid_reason:
                raise ValueError("invalid_reason must be a non-empty string")
            if self.prob_a is not None or self.choice is not None:
                raise ValueError("an invalid JudgeResult carries no prob_a and no choice")
        if self.tokens_in < 0 or self.tokens_out < 0:
            raise ValueError("token counts must be non-negative")

    @property
    def valid(self) -> bool:
        return self.invalid_reason is None

    @classmethod
    def invalid(
        cls,
        reason: str,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        order_disagreement: bool | None = None,
        raw: tuple[str, ...] = (),
    ) -> JudgeResult:
        return cls(None, None, reason, tokens_in, tokens_out, order_disagreement, raw)


@runtime_checkable
class Judge(Protocol):
    """Anything that answers a batch of pairwise queries, in order, one result per query."""

    def judge(self, queries: list[JudgeQuery], *, seed: int | None = None) -> list[JudgeResult]: ...


class JudgeConfigError(ValueError):
    """A judge configuration is wrong (unknown kind or key, missing API key, bad value)."""


class JudgeAuthError(RuntimeError):
    """The provider rejected the credentials (HTTP 401/403). Not retried: every call would fail."""


class RetryableError(Exception):
    """Internal marker: a transient failure (429, 5xx, timeout, connection) worth retrying."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures.

    Attempt k (0-based) that fails transiently sleeps ``min(max_delay_s, initial_delay_s *
    2**k)`` times a jitter factor in [1 - jitter, 1], or the server's Retry-After when that is
    longer (still capped by ``max_delay_s``). ``max_attempts`` counts the first call.
    """

    max_attempts: int = 3
    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise JudgeConfigError("max_attempts must be at least 1")
        if self.initial_delay_s < 0 or self.max_delay_s < 0 or not 0 <= self.jitter <= 1:
            raise JudgeConfigError("retry delays must be >= 0 and jitter in [0, 1]")

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * (2.0**attempt))
        base *= 1.0 - self.jitter * rng.random()
        if retry_after is not None:
            base = max(base, min(self.max_delay_s, retry_after))
        return base


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    rng: random.Random,
) -> tuple[T | None, str | None]:
    """Call ``fn`` until it succeeds or the retry budget is spent.

    ``fn`` signals a transient failure by raising `RetryableError`; any other exception
    propagates at once (a 400 or 401 is never retried). Returns ``(value, None)`` on success
    and ``(None, reason)`` when every attempt failed transiently.
    """
    last = ""
    for attempt in range(policy.max_attempts):
        try:
            return fn(), None
        except RetryableError as exc:
            last = str(exc)
            if attempt + 1 < policy.max_attempts:
                sleep(policy.delay(attempt, rng, exc.retry_after))
    return None, f"gave up after {policy.max_attempts} attempts: {last}"


# The API root each API judge calls when its config names no ``base_url``.
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com",
}


def build_judge(config: dict[str, Any], *, egress: EgressPolicy | None = None) -> Judge:
    """Build a judge from a plain dict, e.g. ``{"kind": "oracle", "temperature": 0.5}``.

    Every other key is passed to the judge's ``from_config``, which rejects unknown keys, so a
    typo stops the caller instead of silently falling back to a default.

    With ``egress`` (see `ml_worker.core.judges.egress`), an API judge's host must be on its
    allow-list (`EgressRefused` otherwise), and the judge gets an HTTP client that checks
    every connection against it, at connect time.
    """
    if not isinstance(config, dict) or "kind" not in config:
        raise JudgeConfigError(f"judge config needs a 'kind' key, one of {sorted(JUDGE_KINDS)}")
    kind = config["kind"]
    if kind not in JUDGE_KINDS:
        raise JudgeConfigError(
            f"unknown judge kind {kind!r}; expected one of {sorted(JUDGE_KINDS)}"
        )
    options = {k: v for k, v in config.items() if k != "kind"}
    if egress is None or kind not in DEFAULT_BASE_URLS:
        return JUDGE_KINDS[kind]()(options)
    from ml_worker.core.judges.egress import guarded_http_client

    egress.check_url(str(options.get("base_url") or DEFAULT_BASE_URLS[kind]))
    timeout = float(options.get("timeout_s", 60.0))
    return JUDGE_KINDS[kind]()(options, http_client=guarded_http_client(egress, timeout=timeout))


def _oracle() -> Callable[[dict[str, Any]], Judge]:
    from ml_worker.core.judges.oracle import OracleJudge

    return OracleJudge.from_config


def _gemini() -> Callable[[dict[str, Any]], Judge]:
    from ml_worker.core.judges.gemini import GeminiJudge

    return GeminiJudge.from_config


def _openai() -> Callable[[dict[str, Any]], Judge]:
    from ml_worker.core.judges.openai_judge import OpenAIJudge

    return OpenAIJudge.from_config


# kind -> loader of the judge's ``from_config`` (loaded lazily: the API SDKs are heavy). The
# API judges' ``from_config`` also takes ``http_client=``.
JUDGE_KINDS: dict[str, Callable[[], Callable[..., Judge]]] = {
    "oracle": _oracle,
    "gemini": _gemini,
    "openai": _openai,
}


def check_config_keys(kind: str, options: dict[str, Any], allowed: set[str]) -> None:
    """Raise `JudgeConfigError` naming any key of ``options`` not in ``allowed``."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise JudgeConfigError(
            f"unknown {kind} judge config key(s) {unknown}; allowed: {sorted(allowed)}"
        )
