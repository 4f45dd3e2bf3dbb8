"""Exports TRL reads, label exports with provenance, and file imports."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf_platform.datafiles import exports, formats, imports
from rlhf_platform.errors import InvalidInput
from rlhf_platform.labeling.models import Comparison
from tests.conftest import make_campaign
from tests.rlhf_platform.insights.seed import LABELS, seed_campaign

pytestmark = pytest.mark.django_db

DECISIVE = sum(c in ("A", "B") for humans, *_ in LABELS for c in humans.values()) + len(LABELS)


@pytest.fixture
def seeded(researcher, annotator, other_annotator):
    return seed_campaign(researcher, [annotator, other_annotator])


def _jsonl(rows) -> list[dict]:
    out = io.BytesIO()
    exports.write_jsonl(rows, out)
    return [json.loads(line) for line in out.getvalue().decode().splitlines()]


def test_standard_preferences_put_the_preferred_answer_in_chosen(seeded):
    rows = _jsonl(exports.preference_records(campaign=seeded))
    assert len(rows) == DECISIVE == 17  # 11 decisive human labels + 6 judge labels
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in rows)
    # Comparison 2: everyone chose B.
    c2 = [r for r in rows if r["prompt"] == "Seeded prompt 2?"]
    assert {(r["chosen"], r["rejected"]) for r in c2} == {("Answer B2.", "Answer A2.")}


def test_conversational_form(seeded):
    rows = _jsonl(exports.preference_records(campaign=seeded, form="conversational"))
    row = rows[0]
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
    assert row["chosen"][0]["role"] == "assistant"
    assert row["rejected"][0]["role"] == "assistant"


def test_ties_are_excluded_unless_kept(seeded):
    kept = _jsonl(exports.preference_records(campaign=seeded, keep_ties=True))
    assert len(kept) == 18
    ties = [r for r in kept if r["tie"]]
    # A tie is never written as a preference: chosen and rejected are null, the two texts
    # and the choice are in their own columns (issue 18).
    assert len(ties) == 1 and ties[0]["chosen"] is None and ties[0]["rejected"] is None
    assert (ties[0]["response_a"], ties[0]["response_b"]) == ("Answer A3.", "Answer B3.")
    assert ties[0]["choice"] in ("tie", "both_bad")
    assert all(r["chosen"] and r["choice"] in ("A", "B") for r in kept if not r["tie"])
    assert exports.preferences_count(campaign=seeded) == 17


def test_source_filter(seeded):
    assert len(_jsonl(exports.preference_records(campaign=seeded, source="judge"))) == 6
    with pytest.raises(InvalidInput):
        list(exports.preference_records(campaign=seeded, source="robots"))


def test_datasets_loads_the_export_as_trl_expects(seeded, tmp_path):
    from datasets import load_dataset

    for form in ("standard", "conversational"):
        path = tmp_path / f"{form}.jsonl"
        with path.open("wb") as out:
            exports.write_jsonl(exports.preference_records(campaign=seeded, form=form), out)
        ds = load_dataset("json", data_files=str(path), split="train")
        assert ds.column_names == ["prompt", "chosen", "rejected"]
        assert ds.num_rows == 17
        row = ds[0]
        if form == "standard":
            assert all(isinstance(row[k], str) and row[k] for k in ds.column_names)
        else:
            # TRL's conversational preference format: lists of {role, content}.
            assert row["prompt"][-1]["role"] == "user"
            assert [m["role"] for m in row["chosen"]] == ["assistant"]
            assert [m["role"] for m in row["rejected"]] == ["assistant"]
        assert row["chosen"] != row["rejected"]


def test_label_export_has_provenance_in_every_format(seeded, annotator):
    records = list(exports.label_records(campaign=seeded))
    assert len(records) == 18
    human = next(r for r in records if r["annotator"] == annotator.username)
    assert human["source"] == "human" and human["judge_name"] is None
    assert human["shown_first"] == ("B" if human["shown_swapped"] else "A")
    assert human["acquisition_rule"] == "infomax" and human["reward_version_id"]
    assert human["time_taken_ms"] == 2000 and human["labeled_at"]
    judge = next(r for r in records if r["source"] == "judge")
    assert judge["annotator"] is None and judge["judge_name"] == "oracle"
    assert judge["judge_prob_a"] is not None

    names = [name for name, _ in exports.LABEL_COLUMNS]
    out = io.BytesIO()
    assert exports.write_labels(iter(records), out, "csv") == 18
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert list(rows[0]) == names and len(rows) == 18

    out = io.BytesIO()
    assert exports.write_labels(iter(records), out, "parquet") == 18
    table = pq.read_table(io.BytesIO(out.getvalue()))
    assert table.column_names == names and table.num_rows == 18
    assert table.schema.field("shown_swapped").type == pa.bool_()

    out = io.BytesIO()
    exports.write_labels(iter(records), out, "jsonl")
    assert len(out.getvalue().splitlines()) == 18


def _parquet(rows: list[dict]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


def test_prompt_import_from_parquet(researcher):
    campaign = make_campaign(researcher, pairs=0, start=False)
    data = _parquet(
        [
            {"prompt": "One?", "split": "train", "reference": None},
            {"prompt": "Two?", "split": "eval", "reference": "2"},
        ]
    )
    assert imports.prompts_import_file(campaign=campaign, data=data, fmt="parquet") == 2
    assert list(campaign.prompts.values_list("text", "split", "reference")) == [
        ("One?", "train", ""),
        ("Two?", "eval", "2"),
    ]


def test_a_bad_parquet_row_imports_nothing(researcher):
    campaign = make_campaign(researcher, pairs=0, start=False)
    data = _parquet([{"prompt": "Fine?"}, {"prompt": ""}])
    with pytest.raises(InvalidInput) as err:
        imports.prompts_import_file(campaign=campaign, data=data, fmt="parquet")
    assert err.value.code == "import_invalid" and err.value.details[0]["line"] == 2
    assert not campaign.prompts.exists()
    with pytest.raises(InvalidInput):
        imports.prompts_import_file(campaign=campaign, data=b"not parquet", fmt="parquet")


def test_prompt_import_from_jsonl_and_csv(researcher):
    campaign = make_campaign(researcher, pairs=0, start=False)
    imports.prompts_import_file(campaign=campaign, data=b'{"prompt": "J?"}\n', fmt="jsonl")
    imports.prompts_import_file(campaign=campaign, data=b"prompt\nC?\n", fmt="csv")
    assert sorted(campaign.prompts.values_list("text", flat=True)) == ["C?", "J?"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_pair_import_queues_comparisons(researcher, fmt):
    campaign = make_campaign(researcher, pairs=0, start=False)
    pairs = [
        {"prompt": "P1?", "response_a": "a1", "response_b": "b1"},
        {"prompt": "P2?", "response_a": "a2", "response_b": "b2"},
    ]
    if fmt == "jsonl":
        data = "\n".join(json.dumps(p) for p in pairs).encode()
    elif fmt == "csv":
        data = b"prompt,response_a,response_b\nP1?,a1,b1\nP2?,a2,b2\n"
    else:
        data = _parquet(pairs)
    assert imports.pairs_import_file(campaign=campaign, data=data, fmt=fmt) == 2
    comps = Comparison.objects.filter(campaign=campaign).select_related("response_a")
    assert sorted(c.response_a.text for c in comps) == ["a1", "a2"]
    assert {c.acquisition_rule for c in comps} == {"imported"}


def test_pair_import_rejects_a_csv_without_responses(researcher):
    campaign = make_campaign(researcher, pairs=0, start=False)
    with pytest.raises(InvalidInput, match="response_a"):
        imports.pairs_import_file(campaign=campaign, data=b"prompt\nP?\n", fmt="csv")


def test_format_from_name():
    assert formats.format_from_name("x.PARQUET") == "parquet"
    assert formats.format_from_name("x.ndjson") == "jsonl"
    assert formats.format_from_name("x.bin", "csv") == "csv"
    with pytest.raises(InvalidInput):
        formats.format_from_name("x.bin")
