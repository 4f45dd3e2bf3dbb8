from __future__ import annotations

import pytest

from rlhf_platform.campaigns.services import campaign_create, prompts_import

TRAIN = [
    "How do I boil an egg?",
    "Explain photosynthesis briefly.",
    "Give one tip for sleeping better.",
    "What is the capital of France?",
    "Write a haiku about rain.",
    "How do I reverse a list in Python?",
]
EVAL = ["What is 2 + 2?", "Name a primary colour.", "Why is the sky blue?"]


def live_campaign(
    owner,
    *,
    name: str,
    algorithm: str = "infomax",
    feedback_mode: str = "judge",
    acquisition_rule: str | None = None,
    rounds: int = 3,
    **extra,
):
    rule = acquisition_rule or ("infomax" if algorithm == "infomax" else "uniform")
    fields = {
        "prompts_per_round": 4,
        "responses_per_prompt": 3,
        "periodic_tau": 2,
        "seed": 7,
    } | extra
    campaign = campaign_create(
        owner=owner,
        name=name,
        algorithm=algorithm,
        acquisition_rule=rule,
        feedback_mode=feedback_mode,
        max_rounds=rounds,
        policy_config={
            "backend": "tiny",
            "max_new_tokens": 8,
            "policy_steps": 1,
            "eval_prompts": 3,
        },
        reward_config={
            "num_particles": 8,
            "point_hidden": [16, 16],
            "prior_hidden": [8],
            "diff_hidden": [8],
        },
        judge_config={"kind": "oracle", "encoder": "hashing", "temperature": 0.5},
        **fields,
    )
    lines = [f'{{"prompt": "{p}"}}' for p in TRAIN] + [
        f'{{"prompt": "{p}", "split": "eval", "reference": "ok"}}' for p in EVAL
    ]
    prompts_import(campaign=campaign, content="\n".join(lines), fmt="jsonl")
    return campaign


@pytest.fixture(autouse=True)
def _artifacts(settings, tmp_path):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
