"""The export and import endpoints under /api/v1/."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from rlhf_platform.datafiles import exports
from rlhf_platform.labeling.models import Comparison
from tests.conftest import make_campaign, make_user
from tests.rlhf_platform.insights.seed import seed_campaign

pytestmark = pytest.mark.django_db


def _client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def _body(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def seeded(researcher, annotator, other_annotator):
    return seed_campaign(researcher, [annotator, other_annotator])


def test_preferences_download(researcher, seeded):
    response = _client(researcher).get(
        f"/api/v1/campaigns/{seeded.pk}/exports/preferences/?form=conversational&ties=keep"
    )
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in _body(response).decode().splitlines()]
    assert len(rows) == 18 and set(rows[0]) == {
        "prompt",
        "chosen",
        "rejected",
        "response_a",
        "response_b",
        "choice",
        "tie",
    }


def test_labels_download_as_parquet(researcher, seeded):
    response = _client(researcher).get(
        f"/api/v1/campaigns/{seeded.pk}/exports/labels/?file_format=parquet&source=human"
    )
    assert response.status_code == 200 and response.streaming
    table = pq.read_table(io.BytesIO(_body(response)))
    assert table.num_rows == 12 and set(table.column("source").to_pylist()) == {"human"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_exports_stream_from_the_database_in_chunks(researcher, seeded, monkeypatch, fmt):
    # One chunk per row for the text formats (one per row group for Parquet): the file is
    # sent as it is written, never built whole in memory first.
    monkeypatch.setattr(exports, "STREAM_CHUNK_BYTES", 1)
    with CaptureQueriesContext(connection) as queries:
        response = _client(researcher).get(
            f"/api/v1/campaigns/{seeded.pk}/exports/labels/?file_format={fmt}"
        )
        before = len(queries)
        assert response.status_code == 200 and response.streaming
        assert response["Content-Disposition"] == (
            f'attachment; filename="campaign-{seeded.pk}-labels.{fmt}"'
        )
        chunks = list(response.streaming_content)
    # The labels are read while the body streams (after the view returned), not before.
    reads = [q["sql"] for q in queries.captured_queries[before:]]
    assert any("labeling_label" in sql for sql in reads)
    expected = list(exports.label_records(campaign=seeded))
    assert len(expected) == 18
    body = b"".join(chunks)
    if fmt == "jsonl":
        assert len(chunks) == 18
        assert [json.loads(line) for line in body.decode().splitlines()] == expected
    elif fmt == "csv":
        assert len(chunks) == 19  # the header, then one per row
        rows = list(csv.DictReader(io.StringIO(body.decode())))
        assert [int(r["label_id"]) for r in rows] == [r["label_id"] for r in expected]
        assert [r["choice"] for r in rows] == [r["choice"] for r in expected]
    else:
        table = pq.read_table(io.BytesIO(body))
        assert table.to_pylist() == expected


def test_the_preference_export_streams_the_same_rows_as_the_service(researcher, seeded):
    response = _client(researcher).get(f"/api/v1/campaigns/{seeded.pk}/exports/preferences/")
    assert response.streaming
    rows = [json.loads(line) for line in _body(response).decode().splitlines()]
    assert rows == list(exports.preference_records(campaign=seeded))


def test_a_bad_parameter_is_a_400_with_a_code(researcher, seeded):
    response = _client(researcher).get(
        f"/api/v1/campaigns/{seeded.pk}/exports/labels/?file_format=xls"
    )
    assert response.status_code == 400 and response.json()["code"] == "invalid_parameter"


def test_annotators_and_other_researchers_cannot_export(annotator, seeded):
    for path in ("preferences", "labels"):
        url = f"/api/v1/campaigns/{seeded.pk}/exports/{path}/"
        assert _client(annotator).get(url).status_code == 403
        assert _client(make_user(f"rob-{path}", "researcher")).get(url).status_code == 404
        assert APIClient().get(url).status_code == 401


def test_prompt_file_import_parquet(researcher):
    campaign = make_campaign(researcher, pairs=0, start=False)
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"prompt": "P?"}, {"prompt": "Q?", "split": "eval"}]), out)
    upload = SimpleUploadedFile("prompts.parquet", out.getvalue())
    response = _client(researcher).post(
        f"/api/v1/campaigns/{campaign.pk}/prompts/import/", {"file": upload}, format="multipart"
    )
    assert response.status_code == 201 and response.json() == {"count": 2}


def test_pair_file_import_and_its_errors(researcher, annotator):
    campaign = make_campaign(researcher, pairs=0, start=False, members=(annotator,))
    url = f"/api/v1/campaigns/{campaign.pk}/imports/pairs/"
    good = SimpleUploadedFile("pairs.csv", b"prompt,response_a,response_b\nP?,a,b\n")
    response = _client(researcher).post(url, {"file": good}, format="multipart")
    assert response.status_code == 201 and response.json() == {"count": 1}
    assert Comparison.objects.filter(campaign=campaign).count() == 1

    bad = SimpleUploadedFile(
        "pairs.jsonl", b'{"prompt": "P?", "response_a": "same", "response_b": "same"}\n'
    )
    response = _client(researcher).post(url, {"file": bad}, format="multipart")
    assert response.status_code == 400 and response.json()["code"] == "import_invalid"

    unknown = SimpleUploadedFile("pairs.xlsx", b"...")
    response = _client(researcher).post(url, {"file": unknown}, format="multipart")
    assert response.json()["code"] == "invalid_format"

    again = SimpleUploadedFile("pairs.csv", b"prompt,response_a,response_b\nP?,a,b\n")
    assert _client(annotator).post(url, {"file": again}, format="multipart").status_code == 403


def test_the_export_endpoints_document_their_errors():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    ours = {
        ("/api/v1/campaigns/{campaign_id}/exports/preferences/", "get"),
        ("/api/v1/campaigns/{campaign_id}/exports/labels/", "get"),
        ("/api/v1/campaigns/{campaign_id}/prompts/import/", "post"),
        ("/api/v1/campaigns/{campaign_id}/imports/pairs/", "post"),
    }
    for path, method in ours:
        responses = schema["paths"][path][method]["responses"]
        errors = {code: r for code, r in responses.items() if int(code) >= 400}
        assert {"401", "403", "404"} <= set(errors), path
        for response in errors.values():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/Error"
