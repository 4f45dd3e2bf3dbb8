"""A pairwise judge on Google's Gemini API through the ``google-genai`` SDK.

The paper's simulated rater was Gemini 1.5 Pro, the default model here. The answer is asked as
JSON (``response_mime_type="application/json"``) or as a single token and parsed strictly. The
SDK's own retries are off; this judge retries 429, 5xx, 408, timeouts and connection errors with
exponential backoff, never other 4xx. HTTP goes through an ``httpx.Client`` handed to the SDK
(``HttpOptions.httpx_client``), so tests replay recorded exchanges with respx.

Config keys (``build_judge({"kind": "gemini", ...})``): see `GeminiJudge.from_config` and
docs/judges.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from google import genai
from google.genai import errors, types

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
)

DEFAULT_MODEL = "gemini-1.5-pro"
DEFAULT_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
_RETRY_STATUS = {408, 429}
# Finish reasons meaning the model would not (or was not allowed to) answer.
_BLOCKED = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}


class GeminiJudge(ApiJudge):
    """Pairwise judge over ``models/{model}:generateContent``.

    Args:
        model: Gemini model name (default "gemini-1.5-pro", the paper's simulator).
        api_key_env: environment variable holding the key; default GEMINI_API_KEY, then
            GOOGLE_API_KEY. A missing key is an error here, at construction.
        base_url, api_version: override the API root / version (proxies, tests).
        timeout_s: per-request timeout.
        answer_format: "json" (sent with ``response_mime_type="application/json"``) or "token".
        both_orders, strict, retry, concurrency, sleep: see `ApiJudge`.
        http_client: an ``httpx.Client`` to use (default: one with ``timeout_s``).
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        api_key_env: str | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        timeout_s: float = 60.0,
        answer_format: str = "json",
        temperature: float = 0.0,
        max_output_tokens: int = 32,
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
            raise JudgeConfigError("gemini judge: 'model' must be a model name")
        if timeout_s <= 0:
            raise JudgeConfigError("gemini judge: timeout_s must be > 0")
        self.model = model
        self.key_envs = (api_key_env,) if api_key_env else DEFAULT_KEY_ENVS
        api_key = api_key_from_env("gemini", self.key_envs)
        self.timeout_s = float(timeout_s)
        self.temperature = float(temperature)
        self.max_output_tokens = int(max_output_tokens)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=self.timeout_s)
        self.client = genai.Client(
            api_key=api_key,
            vertexai=False,
            http_options=types.HttpOptions(
                base_url=base_url,
                api_version=api_version,
                timeout=int(self.timeout_s * 1000),  # milliseconds
                httpx_client=self._http,
                retry_options=None,  # our own retry loop
            ),
        )

    CONFIG_KEYS = {
        "model",
        "api_key_env",
        "base_url",
        "api_version",
        "timeout_s",
        "answer_format",
        "temperature",
        "max_output_tokens",
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
    ) -> GeminiJudge:
        """``http_client``: one built for this judge (by ``build_judge``), closed with it."""
        check_config_keys("gemini", options, cls.CONFIG_KEYS)
        opts = dict(options)
        retry = RetryPolicy(
            max_attempts=int(opts.pop("max_attempts", 3)),
            initial_delay_s=float(opts.pop("backoff_initial_s", 1.0)),
            max_delay_s=float(opts.pop("backoff_max_s", 30.0)),
        )
        judge = cls(retry=retry, http_client=http_client, **opts)
        judge._owns_http = True
        return judge

    @property
    def judge_id(self) -> str:
        return f"gemini({self.model}{',both-orders' if self.both_orders else ''})"

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _config(self, system: str, seed: int | None) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=system,
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            candidate_count=1,
            response_mime_type="application/json" if self.answer_format == "json" else None,
            seed=seed,
        )

    def _ask_once(self, query: JudgeQuery, seed: int | None) -> OrderAnswer:
        system, user = build_messages(query, answer_format=self.answer_format)
        try:
            response = self.client.models.generate_content(
                model=self.model, contents=user, config=self._config(system, seed)
            )
        except errors.APIError as exc:
            code = int(exc.code or 0)
            message = str(exc.message or exc.status or "")[:200]
            if (
                code in (401, 403)
                or "API_KEY_INVALID" in str(exc.details)
                or (code == 400 and "API key not valid" in message)
            ):
                raise JudgeAuthError(
                    f"gemini judge: HTTP {code}: {message} "
                    f"(check the key in ${' or $'.join(self.key_envs)})"
                ) from exc
            if code in _RETRY_STATUS or code >= 500:
                headers = getattr(exc.response, "headers", None) or {}
                retry_after = parse_retry_after(headers.get("retry-after"))
                raise RetryableError(f"HTTP {code}: {message}", retry_after=retry_after) from exc
            return OrderAnswer(None, None, f"HTTP {code}: {message}")
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timeout after {self.timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"connection error: {exc}") from exc

        usage = response.usage_metadata
        tokens_in = int(getattr(usage, "prompt_token_count", 0) or 0)
        tokens_out = int(getattr(usage, "candidates_token_count", 0) or 0) + int(
            getattr(usage, "thoughts_token_count", 0) or 0
        )
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum_name(feedback.block_reason)
            return OrderAnswer(
                None, None, f"refusal: prompt blocked ({reason})", tokens_in, tokens_out
            )
        if not response.candidates:
            return OrderAnswer(None, None, "no candidates in the response", tokens_in, tokens_out)
        candidate = response.candidates[0]
        finish = _enum_name(candidate.finish_reason) if candidate.finish_reason else ""
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        if finish in _BLOCKED:
            return OrderAnswer(
                None, None, f"refusal: response blocked ({finish})", tokens_in, tokens_out, text
            )
        return self.answer_from_text(
            text, tokens_in=tokens_in, tokens_out=tokens_out, cut_off=finish == "MAX_TOKENS"
        )


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))
