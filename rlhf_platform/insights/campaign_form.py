"""The "New campaign" page's form: HTML inputs in, the one campaign definition out.

The page shows friendly inputs (a judge picked from the configured ones, a policy backend
and model, budget caps and unit costs); :func:`definition_from_post` turns them into the
flat dict of :class:`rlhf_platform.campaigns.definition.CampaignDefinition`, the same the
API and spec files validate, and reports every problem per input.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

from rlhf_platform.campaigns.definition import campaign_validate
from rlhf_platform.campaigns.egress import API_KEY_ENV
from rlhf_platform.campaigns.models import AcquisitionRule, Algorithm, FeedbackMode

# The judges a campaign may pick. The oracle (a simulated rater) needs nothing; an API
# judge needs its key variable set on the workers (checked here on the web host, which
# usually shares the environment) and its host on the admins' allow-list.
JUDGES = (
    ("", "No judge (human labels only)"),
    ("oracle", "Simulated rater (oracle): deterministic, free, for pilots and tests"),
    ("openai", "OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp)"),
    ("gemini", "Gemini (Google)"),
)
BACKENDS = (
    ("", "None: label imported pairs only"),
    ("smollm2", "SmolLM2-135M-Instruct (bundled)"),
    ("hf", "A local Hugging Face model directory"),
    ("pool", "A pool package (PoolPolicy)"),
    ("tiny", "Tiny random model (tests)"),
)


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    kind: str = "number"  # number, text, textarea, select, json
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    step: str = "1"
    initial: str = ""


@dataclass
class Group:
    title: str
    fields: list[Field] = field(default_factory=list)


def _choices(enum) -> tuple[tuple[str, str], ...]:
    return tuple((v, label) for v, label in enum.choices)


GROUPS = [
    Group(
        "Campaign",
        [
            Field("name", "Name", "text"),
            Field("description", "Description", "textarea"),
            Field("guidelines", "Guidelines for annotators (Markdown)", "textarea"),
        ],
    ),
    Group(
        "Method",
        [
            Field(
                "algorithm", "Algorithm", "select", choices=_choices(Algorithm), initial="infomax"
            ),
            Field(
                "acquisition_rule",
                "Acquisition rule",
                "select",
                choices=tuple(c for c in _choices(AcquisitionRule) if c[0] != "imported"),
                initial="infomax",
            ),
            Field(
                "feedback_mode",
                "Feedback",
                "select",
                choices=_choices(FeedbackMode),
                initial="human",
                help="Human, the judge, or both (mixed: a share of pairs goes to the judge too).",
            ),
            Field(
                "mixed_fraction",
                "Mixed: share of pairs also sent to the judge",
                step="0.05",
                initial="0",
            ),
            Field("seed", "Seed", initial="0"),
        ],
    ),
    Group(
        "Judge",
        [
            Field("judge_kind", "Judge", "select", choices=JUDGES),
            Field("judge_model", "Judge model", "text", help="e.g. gpt-4o-mini, gemini-1.5-pro"),
            Field("judge_base_url", "Endpoint (OpenAI-compatible)", "text"),
            Field("judge_api_key_env", "API key variable", "text", help="e.g. OPENAI_API_KEY"),
            Field(
                "judge_temperature",
                "Oracle temperature",
                step="0.05",
                initial="0.5",
                help="Simulated rater only: 0 is noiseless.",
            ),
            Field(
                "judge_extra",
                "More judge settings (JSON, optional)",
                "json",
                help='e.g. {"tie_margin": 0.1} or {"swap_positions": true}',
            ),
        ],
    ),
    Group(
        "Policy and rounds",
        [
            Field("policy_backend", "Policy backend", "select", choices=BACKENDS),
            Field("policy_path", "Model or pool path", "text", help="hf and pool backends."),
            Field("policy_max_new_tokens", "Max new tokens per response", initial="48"),
            Field("max_rounds", "Rounds (empty: until the budget ends)"),
            Field("prompts_per_round", "Prompts per round (B)", initial="16"),
            Field("responses_per_prompt", "Responses per prompt (K)", initial="4"),
            Field("eval_every", "Evaluate every N rounds (0: never)", initial="1"),
            Field("periodic_tau", "Periodic: refit every tau rounds", initial="4"),
            Field("round_deadline_seconds", "Round deadline (seconds)", initial="3600"),
            Field("labels_per_comparison", "Overlap (annotators per pair)", initial="1"),
            Field(
                "policy_config_extra",
                "More policy settings (JSON, optional)",
                "json",
                help='e.g. {"lr": 0.0003, "nudge": 0.1, "top_k": 5}',
            ),
            Field(
                "reward_config",
                "Reward model settings (JSON, optional)",
                "json",
                help='e.g. {"num_particles": 100}',
            ),
        ],
    ),
    Group(
        "Budget",
        [
            Field("label_cap", "Label cap (empty: none)"),
            Field("cost_cap", "Cost cap (empty: none)", step="0.01"),
            Field("annotator_daily_cap", "Labels per annotator per day (empty: none)"),
            Field("human_label_cost", "Cost of a human label", step="0.0001", initial="0"),
            Field("judge_call_cost", "Cost of a judge call", step="0.0001", initial="0"),
            Field("judge_token_cost", "Cost of a judge token", step="0.0000001", initial="0"),
        ],
    ),
]
FIELDS = {f.name: f for g in GROUPS for f in g.fields}
# Inputs that go to the definition as they are (empty: the model default, or no cap).
PLAIN = [
    n
    for n in FIELDS
    if not n.startswith(
        ("judge_kind", "judge_model", "judge_base", "judge_api", "judge_temp", "judge_extra")
    )
    and not n.startswith("policy_")
    and n != "reward_config"
]
NULLABLE = {"max_rounds", "label_cap", "cost_cap", "annotator_daily_cap"}


def judge_choices() -> list[dict[str, Any]]:
    """The judges to offer, each with whether it is usable from here."""
    out = []
    for kind, label in JUDGES:
        note = ""
        if kind in ("openai", "gemini"):
            env = "OPENAI_API_KEY" if kind == "openai" else "GEMINI_API_KEY"
            if not os.environ.get(env):
                note = f"{env} is not set on this host"
        out.append({"value": kind, "label": label, "note": note})
    return out


def initial_values() -> dict[str, str]:
    return {name: f.initial for name, f in FIELDS.items()}


def _json_object(typed: dict[str, str], name: str, errors: dict[str, list[str]]) -> dict:
    if not typed.get(name):
        return {}
    try:
        value = json.loads(typed[name])
    except json.JSONDecodeError as exc:
        errors[name] = [f"Not valid JSON: {exc.msg} (character {exc.pos})."]
        return {}
    if not isinstance(value, dict):
        errors[name] = ["Give a JSON object: {...}."]
        return {}
    return value


def _judge_config(typed: dict[str, str], errors: dict[str, list[str]]) -> dict[str, Any]:
    """The ``judge_config`` the judge inputs describe ({} without a judge)."""
    judge: dict[str, Any] = {}
    kind = typed.get("judge_kind", "")
    extra = _json_object(typed, "judge_extra", errors)
    if not kind:
        return judge
    judge.update(extra)
    if kind not in dict(JUDGES):
        errors["judge_kind"] = ["Pick one of the listed judges."]
    judge["kind"] = kind
    if kind == "oracle":
        try:
            judge["temperature"] = float(typed.get("judge_temperature") or 0.5)
        except ValueError:
            errors["judge_temperature"] = ["A number is required."]
    else:
        if typed.get("judge_model"):
            judge["model"] = typed["judge_model"]
        if typed.get("judge_base_url"):
            judge["base_url"] = typed["judge_base_url"]
        env = typed.get("judge_api_key_env", "")
        if env:
            if not API_KEY_ENV.fullmatch(env):
                errors["judge_api_key_env"] = ["A name like OPENAI_API_KEY."]
            judge["api_key_env"] = env
    return judge


def judge_config_from_post(post: QueryDict) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The judge inputs alone, for "try it on one pair"."""
    typed = {name: post.get(name, "").strip() for name in FIELDS}
    errors: dict[str, list[str]] = {}
    judge = _judge_config(typed, errors)
    if not judge and not errors:
        errors["judge_kind"] = ["Pick a judge to try."]
    return judge, errors


def definition_from_post(
    post: QueryDict,
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, str]]:
    """``(definition values, errors per input, the inputs as typed)``; values are empty
    when there is any error."""
    typed = {name: post.get(name, "").strip() for name in FIELDS}
    errors: dict[str, list[str]] = {}
    data: dict[str, Any] = {}
    for name in PLAIN:
        value = typed[name]
        if value == "":
            if name in NULLABLE:
                data[name] = None
            continue
        data[name] = value

    policy = _json_object(typed, "policy_config_extra", errors)
    if typed["policy_backend"]:
        policy["backend"] = typed["policy_backend"]
        if typed["policy_path"]:
            policy["path"] = typed["policy_path"]
        if typed["policy_max_new_tokens"]:
            try:
                policy["max_new_tokens"] = int(typed["policy_max_new_tokens"])
            except ValueError:
                errors["policy_max_new_tokens"] = ["A whole number is required."]
    data["policy_config"] = policy
    data["reward_config"] = _json_object(typed, "reward_config", errors)
    judge = _judge_config(typed, errors)
    data["judge_config"] = judge

    values, definition_errors = campaign_validate(data)
    for name, messages in definition_errors.items():
        target = {
            "policy_config": "policy_config_extra",
            "judge_config": "judge_kind",
        }.get(name, name)
        errors.setdefault(target if target in FIELDS else "form", []).extend(messages)
    return ({} if errors else values), errors, typed
