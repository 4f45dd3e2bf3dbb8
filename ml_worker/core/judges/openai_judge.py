"""A pairwise judge on any OpenAI-compatible chat completions endpoint.

Works against OpenAI itself and the OpenAI-compatible servers of vLLM, Ollama and llama.cpp
(set ``base_url``). The SDK's own retries are off (``max_retries=0``): this judge retries only
rate limits (429), server errors (5xx), 408 and timeouts / connection errors, with exponential
backoff, and never a 400 or 401. HTTP goes through an ``httpx.Client`` this judge creates (or
one you pass), so tests can replay recorded exchanges with respx.

Config keys (``build_judge({"kind": "openai", ...})``): see `OpenAIJudge.from_config` and
docs/judges.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import openai

from ml_worker.core.judges.base import (
    JudgeAuthError,
    JudgeConfigError,
    JudgeQuery,
    RetryableError,
    RetryPolicy,
    check_config_keys,
)
from ml_worker.core.judges.prompting import (
    ApiJudge,
    OrderAnswer,
    api_key_from_env,
    build_messages,
    parse_retry_after,
    prob_from_label_logprobs,
)

_RETRY_STATUS = {408, 429}


class OpenAIJudge(ApiJudge):
    """Pairwise judge over ``POST {base_url}/chat/completions``.

    Args:
        model: the model name the server knows (e.g. "gpt-4o-mini", "Qwen/Qwen2.5-7B-Instruct").
        base_url: the API root (e.g. "http://localhost:8000/v1" for vLLM,
            "http://localhost:11434/v1" for Ollama); None for api.openai.com.
        api_key_env: environment variable holding the key (default OPENAI_API_KEY); a missing
            key is an error here, at construction. None: no key (local servers that need none).
        timeout_s: per-request timeout.
        answer_format: "json" (``{"choice": ...}``, sent with ``response_format=json_object``
            when ``json_mode``) or "token" (a single A / B / tie token).
        token_limit_param: "max_tokens" (default; vLLM, Ollama, llama.cpp, OpenAI chat models)
            or "max_completion_tokens" (OpenAI reasoning models, which reject max_tokens).
        logprobs: request top-5 logprobs and derive prob_a from the label token's
            distribution (falls back to 1 / 0 / 0.5 from the choice when absent).
        both_orders, strict, retry, concurrency, sleep: see `ApiJudge`.
        http_client: an ``httpx.Client`` to use (default: one with ``timeout_s``).
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 30.0,
        answer_format: str = "json",
        json_mode: bool = True,
        logprobs: bool = False,
        temperature: float = 0.0,
        max_tokens: int = 32,
        token_limit_param: str = "max_tokens",  # noqa: S107 (a parameter name, no secret)
        strict: bool = True,
        both_orders: bool = False,
        retry: RetryPolicy | None = None,
        concurrency: int = 1,
        sleep: Callable[[float], None] = time.sleep,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(
            answer_format=answer_format,
            strict=strict,
            both_orders=both_orders,
            retry=retry,
            concurrency=concurrency,
            sleep=sleep,
        )
        if not model:
            raise JudgeConfigError("openai judge: 'model' is required")
        if timeout_s <= 0:
            raise JudgeConfigError("openai judge: timeout_s must be > 0")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        api_key = api_key_from_env("openai", (api_key_env,)) if api_key_env else "not-needed"
        self.timeout_s = float(timeout_s)
        self.json_mode = json_mode
        self.logprobs = logprobs
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        if token_limit_param not in ("max_tokens", "max_completion_tokens"):
            raise JudgeConfigError(
                "openai judge: token_limit_param must be 'max_tokens' or 'max_completion_tokens'"
            )
        self.token_limit_param = token_limit_param
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=self.timeout_s)
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=self.timeout_s,
            max_retries=0,
            # openai's annotation names the httpx2 fork's Client; it takes httpx's at runtime
            # (its own default is one), and the judge tests run it against recorded answers.
            http_client=self._http,  # type: ignore[arg-type]
        )

    CONFIG_KEYS = {
        "model",
        "base_url",
        "api_key_env",
        "timeout_s",
        "answer_format",
        "json_mode",
        "logprobs",
        "temperature",
        "max_tokens",
        "token_limit_param",
        "strict",
        "both_orders",
        "max_attempts",
        "backoff_initial_s",
        "backoff_max_s",
        "concurrency",
    }

    @classmethod
    def from_config(
        cls, options: dict[str, Any], *, http_client: httpx.Client | None = None
    ) -> OpenAIJudge:
        """``http_client``: one built for this judge (by ``build_judge``), closed with it."""
        check_config_keys("openai", options, cls.CONFIG_KEYS)
        opts = dict(options)
        retry = RetryPolicy(
            max_attempts=int(opts.pop("max_attempts", 3)),
            initial_delay_s=float(opts.pop("backoff_initial_s", 1.0)),
            max_delay_s=float(opts.pop("backoff_max_s", 30.0)),
        )
        if "model" not in opts:
            raise JudgeConfigError("openai judge: 'model' is required")
        judge = cls(retry=retry, http_client=http_client, **opts)
        judge._owns_http = True
        return judge

    @property
    def judge_id(self) -> str:
        where = self.base_url or "api.openai.com"
        return f"openai({self.model}@{where}{',both-orders' if self.both_orders else ''})"

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _request(self, query: JudgeQuery, seed: int | None) -> dict[str, Any]:
        system, user = build_messages(query, answer_format=self.answer_format)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": self.temperature,
            self.token_limit_param: self.max_tokens,
        }
        if self.answer_format == "json" and self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        if self.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = 5
        if seed is not None:
            kwargs["seed"] = seed
        return kwargs

    def _ask_once(self, query: JudgeQuery, seed: int | None) -> OrderAnswer:
        try:
            completion = self.client.chat.completions.create(**self._request(query, seed))
        except openai.APITimeoutError as exc:
            raise RetryableError(f"timeout after {self.timeout_s:g}s") from exc
        except openai.APIConnectionError as exc:
            raise RetryableError(f"connection error: {exc}") from exc
        except openai.APIStatusError as exc:
            code = exc.status_code
            message = _error_message(exc)
            if code in (401, 403):
                raise JudgeAuthError(
                    f"openai judge: HTTP {code} from {self.base_url or 'api.openai.com'}: "
                    f"{message} (check the key in ${self.api_key_env})"
                ) from exc
            if code in _RETRY_STATUS or code >= 500:
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                raise RetryableError(f"HTTP {code}: {message}", retry_after=retry_after) from exc
            return OrderAnswer(None, None, f"HTTP {code}: {message}")
        except openai.APIResponseValidationError as exc:
            return OrderAnswer(None, None, f"malformed response body: {exc}")

        usage = completion.usage
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
        if not completion.choices:
            return OrderAnswer(None, None, "no choices in the response", tokens_in, tokens_out)
        choice = completion.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if refusal:
            return OrderAnswer(
                None, None, f"refusal: {refusal[:80]!r}", tokens_in, tokens_out, refusal
            )
        if choice.finish_reason == "content_filter":
            return OrderAnswer(
                None, None, "refusal: content filter", tokens_in, tokens_out, message.content or ""
            )
        logprob_content = getattr(getattr(choice, "logprobs", None), "content", None)
        return self.answer_from_text(
            message.content,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            label_logprobs=(lambda label: _label_prob(logprob_content, label))
            if logprob_content
            else None,
            cut_off=choice.finish_reason == "length",
        )


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
    return str(exc.message)[:200]


def _label_prob(content: list[Any], label: str) -> float | None:
    """prob_a from the top logprobs at the first token that reads as the chosen label."""
    for tok in content:
        if tok.token.strip().strip("\"'").lower() == label.lower():
            candidates = [(t.token, t.logprob) for t in (tok.top_logprobs or [])]
            if all(t != tok.token for t, _ in candidates):
                candidates.append((tok.token, tok.logprob))
            return prob_from_label_logprobs(candidates)
    return None
