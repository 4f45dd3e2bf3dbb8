"""The export and import management commands (progress bars go to stderr)."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.labeling.models import Comparison
from tests.conftest import make_campaign
from tests.rlhf_platform.insights.seed import seed_campaign

pytestmark = pytest.mark.django_db


def test_export_preferences_writes_jsonl_with_a_progress_bar(researcher, annotator, tmp_path):
    campaign = seed_campaign(researcher, [annotator])
    out, err = tmp_path / "prefs.jsonl", io.StringIO()
    call_command("export_preferences", str(campaign.pk), "-o", str(out), stderr=err)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 11  # 6 judge labels + 5 decisive ones of the annotator (1 tie)
    assert "preferences" in err.getvalue() and "100%" in err.getvalue()


def test_export_labels_by_name_as_parquet(researcher, annotator, tmp_path):
    campaign = seed_campaign(researcher, [annotator])
    out = tmp_path / "labels.parquet"
    call_command("export_labels", campaign.name, "-o", str(out), stderr=io.StringIO())
    assert pq.read_table(out).num_rows == 12


def test_import_prompts_and_a_bad_file(researcher, tmp_path):
    campaign = make_campaign(researcher, pairs=0, start=False)
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "One?"}\n{"prompt": "Two?", "split": "eval"}\n')
    stdout = io.StringIO()
    call_command("import_prompts", str(campaign.pk), str(good), stdout=stdout, stderr=io.StringIO())
    assert "Imported 2 prompts" in stdout.getvalue()
    bad = tmp_path / "p.csv"
    bad.write_text("text\n\n")
    with pytest.raises(CommandError, match="import_"):
        call_command("import_prompts", str(campaign.pk), str(bad), stderr=io.StringIO())


def test_import_pairs_creates_a_plain_ab_campaign(researcher, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps({"prompt": f"P{i}?", "response_a": f"a{i}", "response_b": f"b{i}"})
            for i in range(3)
        )
    )
    call_command(
        "import_pairs",
        str(pairs),
        "--create",
        "AB",
        "--owner",
        researcher.username,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    campaign = Campaign.objects.get(name="AB")
    assert not campaign.runs_rounds
    assert Comparison.objects.filter(campaign=campaign).count() == 3


def test_a_bad_pair_file_leaves_no_campaign_behind(researcher, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("prompt,response_a\nP?,a\n")
    with pytest.raises(CommandError):
        call_command(
            "import_pairs",
            str(pairs),
            "--create",
            "AB",
            "--owner",
            researcher.username,
            stderr=io.StringIO(),
        )
    assert not Campaign.objects.filter(name="AB").exists()
