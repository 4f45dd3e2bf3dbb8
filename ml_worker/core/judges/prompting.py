"""The pairwise prompt of the API judges, strict answer parsing, and position swapping.

The judge model is asked which of two responses is better and must answer either with a JSON
object ``{"choice": "A" | "B" | "tie"}`` (``answer_format="json"``) or with the single token
``A``, ``B`` or ``tie`` (``answer_format="token"``). `parse_answer` accepts exactly that
(a JSON object may sit inside one Markdown code fence, labels are case-insensitive, a JSON
object may carry extra keys such as a rationale). Anything else is an invalid answer with a
reason: empty, refusal, malformed JSON, extra prose around the answer (when strict), unknown
label. With ``strict=False`` a lone JSON object or label embedded in prose is accepted.

Position swapping: with ``both_orders`` the judge asks once as (A, B) and once as (B, A);
`combine_orders` maps the second answer back, averages the two probabilities and reports
whether the two orders disagree.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ml_worker.core.choice import JUDGE_CHOICES, Choice
from ml_worker.core.judges.base import (
    JudgeConfigError,
    JudgeQuery,
    JudgeResult,
    RetryPolicy,
    call_with_retries,
)

ANSWER_FORMATS = ("json", "token")

SYSTEM_PROMPT = (
    "You are an impartial expert judge comparing two responses to the same user prompt. "
    "Judge which response is more helpful, correct, relevant, complete and clearly written "
    "for the prompt. Do not let the order of the responses, their length or their style alone "
    "decide. If they are equally good (or equally bad), answer tie."
)

_FORMAT_INSTRUCTIONS = {
    "json": (
        'Answer with only a JSON object and nothing else: {"choice": "A"} if Response A is '
        'better, {"choice": "B"} if Response B is better, or {"choice": "tie"}.'
    ),
    "token": (
        "Answer with exactly one token and nothing else: A if Response A is better, B if "
        "Response B is better, or tie."
    ),
}


def build_messages(query: JudgeQuery, *, answer_format: str = "json") -> tuple[str, str]:
    """The (system, user) messages asking which of ``query``'s responses is better."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}")
    parts = [f"[User prompt]\n{query.prompt}"]
    if query.reference is not None and query.reference.strip():
        parts.append(f"[Reference answer]\n{query.reference}")
    parts.append(f"[Response A]\n{query.response_a}")
    parts.append(f"[Response B]\n{query.response_b}")
    parts.append(_FORMAT_INSTRUCTIONS[answer_format])
    return SYSTEM_PROMPT, "\n\n".join(parts)


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed judge answer: a choice in {"A", "B", "tie"}, or None and the reason."""

    choice: str | None
    invalid_reason: str | None = None


# Lower-cased answer text (with or without a full stop) -> choice; a judge answers A, B or tie.
_LABELS = {
    spelled: c.value for c in JUDGE_CHOICES for spelled in (c.value.lower(), c.value.lower() + ".")
}
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
_REFUSAL = re.compile(
    r"(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:'|no)t|i cannot|i'?m (?:not able|unable)|"
    r"i am (?:not able|unable)|i won'?t|i will not|as an ai\b|not able to (?:help|assist|comply))",
    re.IGNORECASE,
)
_EMBEDDED_OBJECT = re.compile(r"\{[^{}]*\}")
_EMBEDDED_LABEL = re.compile(r"\b(A|B|tie)\b", re.IGNORECASE)


def _label(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return _LABELS.get(value.strip().lower())


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _from_object(obj: object) -> ParsedAnswer:
    if not isinstance(obj, dict):
        return ParsedAnswer(None, f"malformed JSON: expected an object, got {type(obj).__name__}")
    if "choice" not in obj:
        return ParsedAnswer(None, "malformed JSON: no 'choice' key")
    label = _label(obj["choice"])
    if label is None:
        return ParsedAnswer(None, f"unknown label {obj['choice']!r}")
    return ParsedAnswer(label)


def parse_answer(text: str | None, *, strict: bool = True) -> ParsedAnswer:
    """Parse a judge's answer text into a choice, or an invalid reason.

    Accepted: a JSON object with a ``"choice"`` key, optionally in one Markdown code fence;
    or a bare label ``A`` / ``B`` / ``tie`` (case-insensitive, optional final period).
    """
    if text is None or not text.strip():
        return ParsedAnswer(None, "empty answer")
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group(1).strip()
    label = _label(body)
    if label is not None:
        return ParsedAnswer(label)
    if body.startswith("{") or body.startswith("["):
        try:
            return _from_object(json.loads(body))
        except json.JSONDecodeError as exc:
            return ParsedAnswer(None, f"malformed JSON: {exc.msg} in {_short(body)!r}")
    if _REFUSAL.search(body):
        return ParsedAnswer(None, f"refusal: {_short(body)!r}")
    embedded = _EMBEDDED_OBJECT.findall(body)
    if strict:
        if embedded:
            return ParsedAnswer(None, f"extra prose around the JSON answer: {_short(body)!r}")
        if _EMBEDDED_LABEL.search(body):
            return ParsedAnswer(None, f"extra prose around the label: {_short(body)!r}")
        return ParsedAnswer(None, f"unknown label {_short(body)!r}")
    # Lenient: exactly one JSON object, or exactly one distinct label, inside the prose.
    if len(embedded) == 1:
        try:
            return _from_object(json.loads(embedded[0]))
        except json.JSONDecodeError as exc:
            return ParsedAnswer(None, f"malformed JSON: {exc.msg} in {_short(embedded[0])!r}")
    labels = {_label(m) for m in _EMBEDDED_LABEL.findall(body)}
    if len(labels) == 1:
        return ParsedAnswer(labels.pop())
    return ParsedAnswer(None, f"no single answer in {_short(body)!r}")


def prob_from_choice(choice: str) -> float:
    """The probability that A is preferred implied by a hard choice: 1, 0 or 1/2."""
    target = Choice(choice).target
    if target is None or Choice(choice) not in JUDGE_CHOICES:
        raise ValueError(
            f"a judge answers one of {[c.value for c in JUDGE_CHOICES]}, not {choice!r}"
        )
    return target


def prob_from_label_logprobs(candidates: Iterable[tuple[str, float]]) -> float | None:
    """P(A preferred) from the top log-probabilities at the label's token position.

    ``candidates``: (token text, logprob) pairs. Tokens that read as A, B or tie (ignoring
    spaces and quotes) are renormalized among themselves; a tie counts one half. None when
    neither A nor B is among the candidates.
    """
    mass = {c.value: 0.0 for c in JUDGE_CHOICES}
    for token, logprob in candidates:
        label = _label(token.strip().strip("\"'"))
        if label is not None and math.isfinite(logprob):
            mass[label] += math.exp(logprob)
    total = sum(mass.values())
    if mass["A"] + mass["B"] == 0.0 or total == 0.0:
        return None
    return sum(mass[c.value] * (c.target or 0.0) for c in JUDGE_CHOICES) / total


@dataclass(frozen=True)
class OrderAnswer:
    """One call's outcome, in the order that call was asked: a probability that its A is
    preferred and a choice, or an invalid reason; with the tokens it cost and its raw text."""

    prob_a: float | None
    choice: str | None
    invalid_reason: str | None
    tokens_in: int = 0
    tokens_out: int = 0
    raw: str = ""

    def to_result(self) -> JudgeResult:
        if self.invalid_reason is not None:
            return JudgeResult.invalid(
                self.invalid_reason,
                tokens_in=self.tokens_in,
                tokens_out=self.tokens_out,
                raw=(self.raw,),
            )
        assert self.prob_a is not None and self.choice is not None  # noqa: S101 (type narrowing, not a check)
        return JudgeResult(
            self.prob_a, self.choice, None, self.tokens_in, self.tokens_out, raw=(self.raw,)
        )


def combine_orders(first: OrderAnswer, swapped: OrderAnswer) -> JudgeResult:
    """Combine the answer asked as (A, B) with the answer asked as (B, A).

    The swapped answer is mapped back (its A is our B): ``prob_a = (p1 + (1 - p2)) / 2``.
    The choice is the one both orders agree on; when they disagree it follows the averaged
    probability (A above 1/2, B below, tie at 1/2), and ``order_disagreement`` is True. If
    either order is invalid the result is invalid (one order alone would reintroduce the
    position bias), and its tokens still count.
    """
    tokens_in = first.tokens_in + swapped.tokens_in
    tokens_out = first.tokens_out + swapped.tokens_out
    raw = (first.raw, swapped.raw)
    reasons = [
        f"{name}: {ans.invalid_reason}"
        for name, ans in (("A-B order", first), ("B-A order", swapped))
        if ans.invalid_reason is not None
    ]
    if reasons:
        return JudgeResult.invalid(
            "; ".join(reasons), tokens_in=tokens_in, tokens_out=tokens_out, raw=raw
        )
    assert first.prob_a is not None and first.choice is not None  # noqa: S101 (type narrowing)
    assert swapped.prob_a is not None and swapped.choice is not None  # noqa: S101 (type narrowing)
    back_choice = Choice(swapped.choice).swapped().value
    prob_a = (first.prob_a + (1.0 - swapped.prob_a)) / 2.0
    disagree = back_choice != first.choice
    if not disagree:
        choice = first.choice
    else:
        choice = (Choice.A if prob_a > 0.5 else Choice.B if prob_a < 0.5 else Choice.TIE).value
    return JudgeResult(prob_a, choice, None, tokens_in, tokens_out, disagree, raw)


class ApiJudge:
    """Shared driver of the API judges: orders, retries, concurrency, token accounting.

    Subclasses implement `_ask_once(query, seed) -> OrderAnswer`: one provider call, raising
    `RetryableError` on a transient failure (429, 5xx, 408, timeout, connection error),
    `JudgeAuthError` on rejected credentials, and returning an invalid `OrderAnswer` for any
    other failure (a 400, a malformed answer, a refusal): those are not retried.
    """

    def __init__(
        self,
        *,
        answer_format: str = "json",
        strict: bool = True,
        both_orders: bool = False,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if answer_format not in ANSWER_FORMATS:
            raise JudgeConfigError(f"answer_format must be one of {ANSWER_FORMATS}")
        if concurrency < 1:
            raise JudgeConfigError("concurrency must be >= 1")
        self.answer_format = answer_format
        self.strict = strict
        self.both_orders = both_orders
        self.retry = retry or RetryPolicy()
        self.concurrency = concurrency
        self.sleep = sleep

    def _ask_once(self, query: JudgeQuery, seed: int | None) -> OrderAnswer:
        raise NotImplementedError

    def _ask(self, query: JudgeQuery, seed: int | None) -> OrderAnswer:
        rng = random.Random()  # noqa: S311 (jitter decorrelates workers; it needs no reproducibility)
        answer, reason = call_with_retries(
            lambda: self._ask_once(query, seed), self.retry, sleep=self.sleep, rng=rng
        )
        if answer is None:
            return OrderAnswer(None, None, reason or "no answer")
        return answer

    def _judge_one(self, query: JudgeQuery, seed: int | None) -> JudgeResult:
        first = self._ask(query, seed)
        if not self.both_orders:
            return first.to_result()
        return combine_orders(first, self._ask(query.swapped(), seed))

    def judge(self, queries: list[JudgeQuery], *, seed: int | None = None) -> list[JudgeResult]:
        """One result per query, in order. Raises `JudgeAuthError` if the key is rejected."""
        if self.concurrency == 1 or len(queries) <= 1:
            return [self._judge_one(q, seed) for q in queries]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda q: self._judge_one(q, seed), queries))

    def answer_from_text(
        self,
        text: str | None,
        *,
        tokens_in: int,
        tokens_out: int,
        label_logprobs: Callable[[str], float | None] | None = None,
        cut_off: bool = False,
    ) -> OrderAnswer:
        """Parse ``text``; prob_a from the label's logprobs when given, else from the choice."""
        parsed = parse_answer(text, strict=self.strict)
        if parsed.choice is None:
            reason = parsed.invalid_reason or "unparseable answer"
            if cut_off:
                reason += " (the answer was cut at the token limit)"
            return OrderAnswer(None, None, reason, tokens_in, tokens_out, text or "")
        prob = label_logprobs(parsed.choice) if label_logprobs is not None else None
        if prob is None:
            prob = prob_from_choice(parsed.choice)
        return OrderAnswer(prob, parsed.choice, None, tokens_in, tokens_out, text or "")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header holding a number of seconds (dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def api_key_from_env(kind: str, names: tuple[str, ...]) -> str:
    """The first non-empty environment variable among ``names``, or a `JudgeConfigError`."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise JudgeConfigError(
        f"{kind} judge: no API key; set the environment variable "
        f"{' or '.join(names)} (or name another one with api_key_env)"
    )
