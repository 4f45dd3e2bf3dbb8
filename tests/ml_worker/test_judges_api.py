"""The API judges (OpenAI-compatible and Gemini) against replayed HTTP exchanges.

Each cassette in ``cassettes/<provider>/<name>.json`` holds the request/response pairs of one
scenario, shaped like the real APIs (OpenAI chat completions, Gemini generateContent). respx
replays them at the httpx transport; a guard makes any real socket connection fail the test.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from ml_worker.core.evaluation import win_rate
from ml_worker.core.judges import JudgeAuthError, JudgeConfigError, JudgeQuery, build_judge
from ml_worker.core.judges.base import RetryPolicy
from ml_worker.core.judges.gemini import GeminiJudge
from ml_worker.core.judges.openai_judge import OpenAIJudge
from ml_worker.core.judges.prompting import (
    OrderAnswer,
    build_messages,
    combine_orders,
    parse_answer,
)

CASSETTES = Path(__file__).parent / "cassettes"
QUERY = JudgeQuery(
    prompt="What is the boiling point of water at sea level?",
    response_a="Water boils at 100 degrees Celsius (212 F) at sea level.",
    response_b="It boils at about 90 degrees.",
)
NO_JITTER = RetryPolicy(max_attempts=3, initial_delay_s=1.0, max_delay_s=30.0, jitter=0.0)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a real connection fails loudly."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a test tried to open a real socket: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-1234")
    monkeypatch.setenv("GEMINI_API_KEY", "gm-test-5678")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


def is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k]) for k, v in expected.items()
        )
    return expected == actual


@contextmanager
def replay(*names: str) -> Iterator[list[httpx.Request]]:
    """Serve the recorded responses of cassettes ``provider/name`` in order.

    Yields the list of requests received; on exit checks that every recorded exchange was
    played, each request had the recorded method and URL and contained the recorded JSON
    fields. Mismatches are collected and asserted afterwards, all of them at once.
    """
    interactions = []
    for name in names:
        interactions += json.loads((CASSETTES / f"{name}.json").read_text())["interactions"]
    seen: list[httpx.Request] = []
    problems: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        i = len(seen)
        seen.append(request)
        if i >= len(interactions):
            problems.append(f"unexpected extra request #{i + 1} to {request.url}")
            return httpx.Response(599)
        recorded, response = interactions[i]["request"], interactions[i]["response"]
        if request.method != recorded["method"] or str(request.url) != recorded["url"]:
            problems.append(f"request #{i + 1}: {request.method} {request.url} != recorded")
        body = json.loads(request.content)
        if not is_subset(recorded.get("json_subset", {}), body):
            problems.append(f"request #{i + 1} body lacks {recorded['json_subset']}: {body}")
        return httpx.Response(
            response["status"], headers=response["headers"], json=response["json"]
        )

    urls = {it["request"]["url"] for it in interactions}
    with respx.mock(assert_all_mocked=True, assert_all_called=True) as router:
        for url in urls:
            router.post(url).mock(side_effect=respond)
        yield seen
    assert not problems, problems
    assert len(seen) == len(interactions), f"{len(seen)} requests, {len(interactions)} recorded"


def openai_judge(sleeps: list[float] | None = None, **kwargs: Any) -> OpenAIJudge:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("retry", NO_JITTER)
    return OpenAIJudge(sleep=(sleeps if sleeps is not None else []).append, **kwargs)


def gemini_judge(sleeps: list[float] | None = None, **kwargs: Any) -> GeminiJudge:
    kwargs.setdefault("retry", NO_JITTER)
    return GeminiJudge(sleep=(sleeps if sleeps is not None else []).append, **kwargs)


def user_message(request: httpx.Request) -> str:
    body = json.loads(request.content)
    if "messages" in body:
        return body["messages"][1]["content"]
    return body["contents"][0]["parts"][0]["text"]


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ('{"choice": "A"}', "A"),
        ('  {"choice":"b", "rationale": "clearer"}\n', "B"),
        ('```json\n{"choice": "tie"}\n```', "tie"),
        ("A", "A"),
        ("tie.", "tie"),
        ("Tie", "tie"),
    ],
)
def test_it_parses_strict_answers(text: str, choice: str) -> None:
    assert parse_answer(text) == (parse_answer(text).__class__(choice, None))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty answer"),
        ('{"choice": "A"', "malformed JSON"),
        ('{"verdict": "A"}', "no 'choice' key"),
        ('["A"]', "expected an object"),
        ('{"choice": "C"}', "unknown label"),
        ('I pick {"choice": "A"} here.', "extra prose"),
        ("Response A is better.", "extra prose"),
        ("I'm sorry, but I cannot evaluate these.", "refusal"),
        ("Neither", "unknown label"),
    ],
)
def test_it_rejects_anything_else_with_a_reason(text: str, reason: str) -> None:
    parsed = parse_answer(text)
    assert parsed.choice is None and reason in (parsed.invalid_reason or "")


@given(st.text(max_size=200), st.booleans())
def test_it_always_returns_either_a_choice_or_a_reason(text: str, strict: bool) -> None:
    parsed = parse_answer(text, strict=strict)
    assert (parsed.choice is None) != (parsed.invalid_reason is None)
    assert parsed.choice in (None, "A", "B", "tie")


def test_it_accepts_a_single_embedded_answer_only_when_lenient() -> None:
    assert parse_answer('I pick {"choice": "A"} here.', strict=False).choice == "A"
    assert parse_answer("Response B is better.", strict=False).choice == "B"
    assert parse_answer("A is good but B is better.", strict=False).choice is None


def test_its_prompt_shows_both_responses_and_the_reference() -> None:
    system, user = build_messages(JudgeQuery("p?", "first", "second", "gold"))
    assert "impartial" in system
    assert user.index("[Reference answer]\ngold") < user.index("[Response A]\nfirst")
    assert user.index("[Response A]\nfirst") < user.index("[Response B]\nsecond")
    assert '{"choice": "A"}' in user
    _, token_user = build_messages(QUERY, answer_format="token")
    assert "exactly one token" in token_user and "[Reference answer]" not in token_user


def test_it_maps_the_swapped_answer_back_and_averages() -> None:
    agree = combine_orders(OrderAnswer(0.9, "A", None, 10, 1), OrderAnswer(0.3, "B", None, 11, 1))
    assert agree.prob_a == pytest.approx(0.8) and agree.choice == "A"
    assert agree.order_disagreement is False and (agree.tokens_in, agree.tokens_out) == (21, 2)
    bias = combine_orders(OrderAnswer(1.0, "A", None), OrderAnswer(1.0, "A", None))
    assert bias.prob_a == 0.5 and bias.choice == "tie" and bias.order_disagreement is True
    broken = combine_orders(OrderAnswer(1.0, "A", None, 5, 1), OrderAnswer(None, None, "refusal"))
    assert not broken.valid and "B-A order: refusal" in (broken.invalid_reason or "")
    assert broken.tokens_in == 5


# ----------------------------------------------------------------------------- OpenAI


def test_openai_judge_reads_a_valid_answer_and_records_usage() -> None:
    with replay("openai/valid") as requests:
        [result] = openai_judge().judge([QUERY])
    assert (result.prob_a, result.choice, result.invalid_reason) == (1.0, "A", None)
    assert (result.tokens_in, result.tokens_out) == (152, 6)
    assert result.order_disagreement is None
    request = requests[0]
    assert request.headers["authorization"] == "Bearer sk-test-1234"
    assert QUERY.response_a in user_message(request)
    assert json.loads(request.content)["messages"][0]["role"] == "system"


def test_openai_judge_marks_a_malformed_answer_invalid_and_never_counts_it() -> None:
    with replay("openai/malformed"):
        [result] = openai_judge().judge([QUERY])
    assert result.prob_a is None and result.choice is None
    assert "malformed JSON" in (result.invalid_reason or "")
    assert "cut at the token limit" in (result.invalid_reason or "")
    assert result.tokens_out == 5  # still billed


def test_openai_judge_rejects_prose_when_strict_and_accepts_it_when_lenient() -> None:
    with replay("openai/prose"):
        [strict] = openai_judge().judge([QUERY])
    with replay("openai/prose"):
        [lenient] = openai_judge(strict=False).judge([QUERY])
    assert "extra prose" in (strict.invalid_reason or "")
    assert lenient.choice == "B" and lenient.prob_a == 0.0


@pytest.mark.parametrize("cassette", ["openai/refusal", "openai/refusal_field"])
def test_openai_judge_reports_a_refusal(cassette: str) -> None:
    with replay(cassette):
        [result] = openai_judge().judge([QUERY])
    assert not result.valid and (result.invalid_reason or "").startswith("refusal")


def test_openai_judge_retries_a_rate_limit_after_the_servers_delay() -> None:
    sleeps: list[float] = []
    with replay("openai/rate_limited_then_ok") as requests:
        [result] = openai_judge(sleeps).judge([QUERY])
    assert len(requests) == 2
    assert sleeps == [2.0]  # Retry-After: 2 beats the 1 s first backoff
    assert result.choice == "B" and result.tokens_in == 150


def test_openai_judge_gives_up_after_three_server_errors_with_backoff() -> None:
    sleeps: list[float] = []
    with replay("openai/server_error_3x") as requests:
        [result] = openai_judge(sleeps).judge([QUERY])
    assert len(requests) == 3
    assert sleeps == [1.0, 2.0]
    assert not result.valid
    assert "gave up after 3 attempts: HTTP 500" in (result.invalid_reason or "")


def test_openai_judge_jitters_its_backoff_within_bounds() -> None:
    sleeps: list[float] = []
    with replay("openai/server_error_3x"):
        openai_judge(sleeps, retry=RetryPolicy(max_attempts=3, jitter=0.5)).judge([QUERY])
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_openai_judge_does_not_retry_a_rejected_key() -> None:
    sleeps: list[float] = []
    with replay("openai/unauthorized") as requests:
        with pytest.raises(JudgeAuthError, match="OPENAI_API_KEY"):
            openai_judge(sleeps).judge([QUERY, QUERY])
    assert len(requests) == 1 and sleeps == []


def test_openai_judge_does_not_retry_a_bad_request() -> None:
    sleeps: list[float] = []
    with replay("openai/bad_request") as requests:
        [result] = openai_judge(sleeps).judge([QUERY])
    assert len(requests) == 1 and sleeps == []
    assert "HTTP 400" in (result.invalid_reason or "")
    assert "maximum context length" in (result.invalid_reason or "")


def test_openai_judge_retries_a_timeout() -> None:
    recorded = json.loads((CASSETTES / "openai/valid.json").read_text())["interactions"][0]
    sleeps: list[float] = []
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post("https://api.openai.com/v1/chat/completions").mock(
            side_effect=[
                httpx.ReadTimeout("read timed out"),
                httpx.Response(200, json=recorded["response"]["json"]),
            ]
        )
        [result] = openai_judge(sleeps, timeout_s=5).judge([QUERY])
    assert route.call_count == 2 and sleeps == [1.0]
    assert result.choice == "A"


def test_openai_judge_asks_in_both_orders_and_reports_disagreement() -> None:
    with replay("openai/both_orders_disagree") as requests:
        [result] = openai_judge(both_orders=True).judge([QUERY])
    first, second = (user_message(r) for r in requests)
    assert first.index(QUERY.response_a) < first.index(QUERY.response_b)
    assert second.index(QUERY.response_b) < second.index(QUERY.response_a)
    assert result.order_disagreement is True
    assert result.prob_a == 0.5 and result.choice == "tie"
    assert (result.tokens_in, result.tokens_out) == (160 + 161, 12)
    assert len(result.raw) == 2


def test_openai_judge_keeps_an_answer_both_orders_agree_on() -> None:
    with replay("openai/both_orders_agree"):
        [result] = openai_judge(both_orders=True).judge([QUERY])
    assert result.order_disagreement is False
    assert result.prob_a == 1.0 and result.choice == "A"


def test_openai_judge_uses_label_logprobs_for_its_probability() -> None:
    judge = openai_judge(
        model="Qwen/Qwen2.5-7B-Instruct",
        base_url="http://localhost:8000/v1",
        api_key_env=None,
        answer_format="token",
        logprobs=True,
    )
    with replay("openai/token_logprobs") as requests:
        [result] = judge.judge([QUERY])
    body = json.loads(requests[0].content)
    assert "response_format" not in body
    p_a = math.exp(-0.22314355) + math.exp(-6.9077553)  # "A" and " A"
    p_b, p_tie = math.exp(-1.7147984), math.exp(-3.5065579)
    assert result.choice == "A"
    assert result.prob_a == pytest.approx((p_a + p_tie / 2) / (p_a + p_b + p_tie))


def test_openai_judge_feeds_win_rate_excluding_invalid_answers() -> None:
    with replay("openai/valid", "openai/malformed"):
        wr = win_rate(openai_judge(), [QUERY.prompt] * 2, ["new 1", "new 2"], ["old 1", "old 2"])
    assert wr.n_invalid == 1 and wr.mean == 1.0


def test_openai_judge_never_reaches_an_unrecorded_host() -> None:
    # An exchange not in a cassette is refused by respx before any socket is opened.
    with respx.mock(assert_all_mocked=True, assert_all_called=False):
        with pytest.raises(respx.models.AllMockedAssertionError):
            openai_judge(base_url="http://unrecorded.invalid/v1").judge([QUERY])


def test_openai_judge_keeps_the_query_order_when_concurrent() -> None:
    recorded = json.loads((CASSETTES / "openai/valid.json").read_text())["interactions"][0]

    def answer(request: httpx.Request) -> httpx.Response:
        # Prefer whichever response is shown first iff it mentions "good".
        user = user_message(request)
        first = user.split("[Response A]\n", 1)[1].split("\n", 1)[0]
        body = json.loads(json.dumps(recorded["response"]["json"]))
        label = "A" if "good" in first else "B"
        body["choices"][0]["message"]["content"] = json.dumps({"choice": label})
        return httpx.Response(200, json=body)

    queries = [JudgeQuery(f"q{i}", "good" if i % 3 == 0 else "meh", "so-so") for i in range(12)]
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post("https://api.openai.com/v1/chat/completions").mock(side_effect=answer)
        results = openai_judge(concurrency=4).judge(queries)
    assert route.call_count == 12
    assert [r.choice for r in results] == ["A" if i % 3 == 0 else "B" for i in range(12)]


def test_openai_judge_needs_its_key_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(JudgeConfigError, match="OPENAI_API_KEY"):
        OpenAIJudge(model="gpt-4o-mini")
    monkeypatch.setenv("MY_VLLM_KEY", "k")
    assert OpenAIJudge(model="m", api_key_env="MY_VLLM_KEY").model == "m"


def test_openai_judge_is_built_from_a_config() -> None:
    judge = build_judge(
        {"kind": "openai", "model": "gpt-4o-mini", "both_orders": True, "max_attempts": 5}
    )
    assert isinstance(judge, OpenAIJudge)
    assert judge.both_orders and judge.retry.max_attempts == 5
    with pytest.raises(JudgeConfigError, match="modle"):
        build_judge({"kind": "openai", "modle": "gpt-4o-mini"})
    with pytest.raises(JudgeConfigError, match="model"):
        build_judge({"kind": "openai"})


def test_openai_judge_can_name_the_token_limit_for_reasoning_models() -> None:
    recorded = json.loads((CASSETTES / "openai/valid.json").read_text())["interactions"][0]
    judge = openai_judge(token_limit_param="max_completion_tokens", max_tokens=64)
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post("https://api.openai.com/v1/chat/completions").mock(
            return_value=httpx.Response(200, json=recorded["response"]["json"])
        )
        judge.judge([QUERY])
    body = json.loads(route.calls.last.request.content)
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body


# ----------------------------------------------------------------------------- Gemini


def test_gemini_judge_reads_a_valid_answer_and_records_usage() -> None:
    with replay("gemini/valid") as requests:
        [result] = gemini_judge().judge([QUERY])
    assert (result.prob_a, result.choice, result.invalid_reason) == (0.0, "B", None)
    assert (result.tokens_in, result.tokens_out) == (180, 7)
    request = requests[0]
    assert request.headers["x-goog-api-key"] == "gm-test-5678"
    body = json.loads(request.content)
    assert "impartial" in body["systemInstruction"]["parts"][0]["text"]
    assert QUERY.response_b in user_message(request)


def test_gemini_judge_marks_an_unknown_label_invalid() -> None:
    with replay("gemini/malformed"):
        [result] = gemini_judge().judge([QUERY])
    assert not result.valid and "unknown label 'both'" in (result.invalid_reason or "")
    assert result.tokens_in == 180


@pytest.mark.parametrize(
    ("cassette", "reason"),
    [
        ("gemini/refusal_blocked", "refusal: response blocked (SAFETY)"),
        ("gemini/refusal_text", "refusal: "),
    ],
)
def test_gemini_judge_reports_a_refusal(cassette: str, reason: str) -> None:
    with replay(cassette):
        [result] = gemini_judge().judge([QUERY])
    assert not result.valid and (result.invalid_reason or "").startswith(reason)


def test_gemini_judge_retries_a_rate_limit_with_backoff() -> None:
    sleeps: list[float] = []
    with replay("gemini/rate_limited_then_ok") as requests:
        [result] = gemini_judge(sleeps).judge([QUERY])
    assert len(requests) == 2 and sleeps == [1.0]
    assert result.choice == "A" and result.tokens_in == 181


def test_gemini_judge_gives_up_after_three_server_errors() -> None:
    sleeps: list[float] = []
    with replay("gemini/server_error_3x") as requests:
        [result] = gemini_judge(sleeps).judge([QUERY])
    assert len(requests) == 3 and sleeps == [1.0, 2.0]
    assert "gave up after 3 attempts: HTTP 500" in (result.invalid_reason or "")


@pytest.mark.parametrize("cassette", ["gemini/unauthorized", "gemini/api_key_invalid"])
def test_gemini_judge_does_not_retry_a_rejected_key(cassette: str) -> None:
    sleeps: list[float] = []
    with replay(cassette) as requests:
        with pytest.raises(JudgeAuthError, match="GEMINI_API_KEY"):
            gemini_judge(sleeps).judge([QUERY])
    assert len(requests) == 1 and sleeps == []


def test_gemini_judge_retries_a_timeout() -> None:
    recorded = json.loads((CASSETTES / "gemini/valid.json").read_text())["interactions"][0]
    sleeps: list[float] = []
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(recorded["request"]["url"]).mock(
            side_effect=[
                httpx.ConnectTimeout("connect timed out"),
                httpx.Response(200, json=recorded["response"]["json"]),
            ]
        )
        [result] = gemini_judge(sleeps).judge([QUERY])
    assert route.call_count == 2 and sleeps == [1.0]
    assert result.choice == "B"


def test_gemini_judge_asks_in_both_orders_and_reports_disagreement() -> None:
    with replay("gemini/both_orders_disagree") as requests:
        [result] = gemini_judge(both_orders=True).judge([QUERY])
    second = user_message(requests[1])
    assert second.index(QUERY.response_b) < second.index(QUERY.response_a)
    assert result.order_disagreement is True and result.prob_a == 0.5
    assert (result.tokens_in, result.tokens_out) == (381, 14)


def test_gemini_judge_needs_a_key_and_falls_back_to_google_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(JudgeConfigError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        GeminiJudge()
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    with replay("gemini/valid") as requests:
        gemini_judge().judge([QUERY])
    assert requests[0].headers["x-goog-api-key"] == "google-key"


def test_gemini_judge_is_built_from_a_config_with_the_papers_model() -> None:
    judge = build_judge({"kind": "gemini", "both_orders": True, "timeout_s": 20})
    assert isinstance(judge, GeminiJudge)
    assert judge.model == "gemini-1.5-pro" and judge.both_orders and judge.timeout_s == 20
    with pytest.raises(JudgeConfigError, match="bothorders"):
        build_judge({"kind": "gemini", "bothorders": True})
