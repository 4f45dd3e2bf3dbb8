"""The preference export as TRL's trainers read it (issue 18).

A tie or a both-bad label must never reach a trainer as "A preferred": with ``ties=keep``
those rows have null ``chosen`` / ``rejected``, so ``DPOTrainer`` and ``RewardTrainer``
(TRL, pinned in the lock file) refuse them loudly, and train on the rows once the ``tie``
column is used to filter them out. Files are loaded with ``datasets.load_dataset`` as a
researcher would; models are tiny and built from a config (no download), one step each.

An export with no rows is refused (409 ``nothing_to_export``) rather than sent as an empty
file that ``load_dataset`` cannot read.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from tests.conftest import make_campaign
from tests.rlhf_platform.insights.seed import seed_campaign

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(researcher, annotator, other_annotator):
    return seed_campaign(researcher, [annotator, other_annotator])


def _download(user, campaign, query: str, tmp_path, name: str):
    client = APIClient()
    client.force_login(user)
    response = client.get(f"/api/v1/campaigns/{campaign.pk}/exports/{query}")
    assert response.status_code == 200
    path = tmp_path / name
    path.write_bytes(b"".join(response.streaming_content))
    return path


def _load(path):
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train")


def _trainers(tmp_path):
    """Factories of a one-step DPOTrainer and RewardTrainer on tiny models."""
    from transformers import LlamaConfig, LlamaForSequenceClassification
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from ml_worker.core.policies.tiny import tiny_causal_lm

    common = {
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "max_length": 128,
    }

    def dpo(dataset):
        model, tokenizer = tiny_causal_lm(seed=0)
        ref_model, _ = tiny_causal_lm(seed=0)
        args = DPOConfig(output_dir=str(tmp_path / "dpo"), **common)
        return DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )

    def reward(dataset):
        model, tokenizer = tiny_causal_lm(seed=0)
        config = LlamaConfig(**{**model.config.to_dict(), "num_labels": 1, "id2label": None})
        args = RewardConfig(output_dir=str(tmp_path / "rm"), **common)
        return RewardTrainer(
            model=LlamaForSequenceClassification(config),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )

    return dpo, reward


def test_trl_trains_on_the_export_and_refuses_ties_it_would_misread(researcher, seeded, tmp_path):
    dpo, reward = _trainers(tmp_path)
    excluded = _load(_download(researcher, seeded, "preferences/", tmp_path, "ex.jsonl"))
    assert excluded.column_names == ["prompt", "chosen", "rejected"]
    for make in (dpo, reward):
        result = make(excluded).train()
        assert result.global_step == 1

    kept = _load(_download(researcher, seeded, "preferences/?ties=keep", tmp_path, "keep.jsonl"))
    ties = kept.filter(lambda row: row["tie"])
    assert len(ties) == 1 and ties[0]["chosen"] is None and ties[0]["rejected"] is None
    assert ties[0]["choice"] in ("tie", "both_bad")
    # A trainer that ignores the tie column fails on the tie; it cannot learn "A preferred".
    for make in (dpo, reward):
        with pytest.raises((AttributeError, TypeError, ValueError)):
            make(kept).train()
    # Filtered on the documented column, the same file trains.
    decisive = kept.filter(lambda row: not row["tie"])
    assert len(decisive) == len(excluded)
    assert dpo(decisive).train().global_step == 1


def test_the_conversational_export_loads_with_its_ties_null(researcher, seeded, tmp_path):
    path = _download(
        researcher, seeded, "preferences/?form=conversational&ties=keep", tmp_path, "c.jsonl"
    )
    rows = _load(path)
    tie = rows.filter(lambda row: row["tie"])[0]
    assert tie["chosen"] is None and tie["response_a"][0]["role"] == "assistant"
    decisive = rows.filter(lambda row: not row["tie"])[0]
    assert decisive["chosen"][0]["role"] == "assistant"
    assert decisive["prompt"][0]["role"] == "user"


@pytest.mark.parametrize(
    "query",
    [
        "preferences/",
        "preferences/?ties=keep&source=judge",
        "labels/?file_format=jsonl",
        "labels/?file_format=csv",
        "labels/?file_format=parquet",
    ],
)
def test_an_export_with_no_rows_is_a_409_not_an_unreadable_file(researcher, query):
    campaign = make_campaign(researcher, pairs=3)
    client = APIClient()
    client.force_login(researcher)
    response = client.get(f"/api/v1/campaigns/{campaign.pk}/exports/{query}")
    assert response.status_code == 409, response.content[:300]
    body = response.json()
    assert body["code"] == "nothing_to_export" and "no file" in body["message"]


@pytest.mark.parametrize("command", ["export_preferences", "export_labels"])
def test_the_commands_write_no_empty_file(researcher, tmp_path, command):
    campaign = make_campaign(researcher, pairs=3)
    out = tmp_path / "out.jsonl"
    with pytest.raises(CommandError, match="Nothing to export"):
        call_command(command, str(campaign.pk), "-o", str(out), stderr=io.StringIO())
    assert not out.exists()


def test_the_label_export_loads_in_every_format(researcher, seeded, tmp_path):
    from datasets import load_dataset

    for fmt, loader in (("jsonl", "json"), ("csv", "csv"), ("parquet", "parquet")):
        path = _download(
            researcher, seeded, f"labels/?file_format={fmt}", tmp_path, f"labels.{fmt}"
        )
        rows = load_dataset(loader, data_files=str(path), split="train")
        assert len(rows) > 0 and "choice" in rows.column_names
    assert json.loads(path.with_suffix(".jsonl").read_text().splitlines()[0])["label_id"]
