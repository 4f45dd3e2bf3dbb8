"""Data files in and out live in one app (rlhf_platform/datafiles, issue 19): the formats are
defined once, and no other module parses or writes a data file itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from rlhf_platform.datafiles import formats

ROOT = Path(__file__).resolve().parents[3]


def _grep(pattern: str) -> list[str]:
    out = subprocess.run(
        ["git", "grep", "-n", "-e", pattern, "--", "rlhf_platform/*.py", "annotator_ui/*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if not line.startswith("rlhf_platform/datafiles/")]


def test_the_formats_are_defined_once():
    assert set(formats.EXTENSIONS.values()) == set(formats.IMPORT_FORMATS)
    assert set(formats.CONTENT_TYPES) == set(formats.LABEL_FORMATS)
    for literal in ('".parquet"', '".jsonl"', '".csv"', "pyarrow", "csv.DictReader"):
        assert _grep(literal) == [], literal


def test_a_spec_file_imports_its_prompts_through_the_same_import(researcher, tmp_path):
    from rlhf_platform.campaigns.specs import campaign_create_from_spec

    (tmp_path / "p.csv").write_text("prompt,split\nHello?,train\nBye?,eval\n")
    campaign, imported = campaign_create_from_spec(
        owner=researcher, spec={"name": "csv", "prompts": "p.csv"}, base_dir=tmp_path
    )
    assert imported == 2 and campaign.prompts.count() == 2
