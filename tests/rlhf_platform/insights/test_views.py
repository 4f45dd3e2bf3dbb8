"""The researcher and budget pages, their CSV downloads, the audited actions, and who may
open them."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from rlhf_platform.budgets.models import Budget
from rlhf_platform.insights.models import AuditEntry
from tests.conftest import make_user
from tests.rlhf_platform.insights.seed import seed_campaign

pytestmark = pytest.mark.django_db


def _pages(campaign) -> list[str]:
    pk = campaign.pk
    return [
        reverse("insights:campaign", args=[pk]),
        reverse("insights:agreement", args=[pk]),
        reverse("insights:budget", args=[pk]),
        reverse("insights:campaign-csv", args=[pk, "win-rate"]),
        reverse("insights:campaign-csv", args=[pk, "rounds"]),
        reverse("insights:campaign-csv", args=[pk, "fit"]),
        reverse("insights:campaign-csv", args=[pk, "reward-accuracy"]),
        reverse("insights:campaign-csv", args=[pk, "acquisition-scores"]),
        reverse("insights:agreement-csv", args=[pk, "confusion"]),
        reverse("insights:agreement-csv", args=[pk, "annotators"]),
        reverse("insights:agreement-csv", args=[pk, "disagreements"]),
        reverse("insights:budget-csv", args=[pk, "ledger"]),
        reverse("insights:budget-csv", args=[pk, "spend"]),
        reverse("insights:budget-csv", args=[pk, "throughput"]),
        reverse("insights:budget-csv", args=[pk, "spend-over-time"]),
        reverse("insights:compare") + f"?c={pk}",
        reverse("insights:compare-csv", args=["win-rate"]) + f"?c={pk}",
        reverse("insights:compare-csv", args=["fit"]) + f"?c={pk}",
    ]


def _csv_rows(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_the_owner_opens_every_page_and_download(client, researcher, seeded):
    client.force_login(researcher)
    for url in _pages(seeded):
        response = client.get(url)
        assert response.status_code == 200, url
        if url.split("?")[0].endswith(".csv"):
            assert response["Content-Type"].startswith("text/csv")
            assert "attachment" in response["Content-Disposition"]
        else:
            assert "Content-Security-Policy" in response.headers
            assert "<svg" in response.content.decode()


def test_an_annotator_is_refused_every_page_and_download(client, annotator, seeded):
    client.force_login(annotator)  # a member of the campaign, but not a researcher
    for url in [*_pages(seeded), reverse("insights:research"), reverse("insights:budgets")]:
        assert client.get(url).status_code == 403, url


def test_a_researcher_sees_only_their_own_campaigns(client, seeded):
    client.force_login(make_user("rob", "researcher"))
    for url in _pages(seeded):
        assert client.get(url).status_code == 404, url
    home = client.get(reverse("insights:research")).content.decode()
    assert seeded.name not in home
    assert seeded.name not in client.get(reverse("insights:budgets")).content.decode()


def test_a_researcher_member_sees_research_pages_but_not_the_budget(client, seeded):
    from rlhf_platform.campaigns.services import campaign_add_member

    colleague = make_user("rob", "researcher")
    campaign_add_member(campaign=seeded, user=colleague)
    client.force_login(colleague)
    assert client.get(reverse("insights:campaign", args=[seeded.pk])).status_code == 200
    assert client.get(reverse("insights:budget", args=[seeded.pk])).status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(client, seeded):
    response = client.get(reverse("insights:campaign", args=[seeded.pk]))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_admin_sees_every_campaign(client, admin_user, seeded):
    client.force_login(admin_user)
    assert seeded.name in client.get(reverse("insights:budgets")).content.decode()
    assert client.get(reverse("insights:budget", args=[seeded.pk])).status_code == 200


def test_campaign_page_draws_its_charts_with_data(client, researcher, seeded):
    client.force_login(researcher)
    html = client.get(reverse("insights:campaign", args=[seeded.pk]) + "?target=0.9").content
    html = html.decode()
    assert 'data-chart="win-rate" data-points="3"' in html
    assert 'class="band"' in html and 'class="fit"' in html
    assert "(log scale)" in html
    assert 'data-chart="rounds"' in html
    assert 'data-chart="reward-accuracy" data-points="3"' in html
    assert 'data-chart="acquisition-scores" data-points="6"' in html
    assert ">100<" in html  # labels needed for 0.9: 4 * (0.5 / 0.1)^2
    assert "style=" not in html  # the CSP forbids inline styles


def test_win_rate_csv_holds_the_chart_data(client, researcher, seeded):
    client.force_login(researcher)
    rows = _csv_rows(client.get(reverse("insights:campaign-csv", args=[seeded.pk, "win-rate"])))
    assert rows[0][:7] == [
        "campaign",
        "algorithm",
        "round",
        "labels",
        "win_rate",
        "ci_low",
        "ci_high",
    ]
    assert [r[3:5] for r in rows[1:]] == [["4", "0.5"], ["16", "0.75"], ["64", "0.875"]]


def test_compare_overlays_campaigns_with_the_label_ratio(client, researcher, seeded, annotator):
    offline = seed_campaign(
        researcher,
        [annotator],
        name="Offline baseline",
        algorithm="offline",
        evals=[(0, 16, 0.5, 0.4, 0.6), (1, 64, 0.75, 0.6, 0.8), (2, 256, 0.875, 0.8, 0.9)],
    )
    client.force_login(researcher)
    url = reverse("insights:compare") + f"?c={seeded.pk}&c={offline.pk}&target=0.9"
    html = client.get(url).content.decode()
    assert 'data-chart="overlay" data-points="6"' in html
    assert html.count('class="band"') == 2
    assert "4.00×" in html  # infomax needs a quarter of the offline labels
    rows = _csv_rows(
        client.get(
            reverse("insights:compare-csv", args=["fit"])
            + f"?c={seeded.pk}&c={offline.pk}&target=0.9"
        )
    )
    assert [r[0] for r in rows[1:]] == ["Seeded", "Offline baseline"]
    assert float(rows[1][-1]) == pytest.approx(4.0)


def test_agreement_page_numbers(client, researcher, seeded):
    client.force_login(researcher)
    html = client.get(reverse("insights:agreement", args=[seeded.pk])).content.decode()
    assert 'data-stat="agreement">0.667<' in html
    assert 'data-stat="kappa">0.351<' in html
    assert "0.200 (1 of 5)" in html
    assert 'data-chart="annotator-agreement" data-points="2"' in html
    assert "Seeded prompt 4?" in html


def test_budget_page_warns_near_the_cap_and_says_when_it_is_reached(client, researcher, seeded):
    client.force_login(researcher)
    url = reverse("insights:budget", args=[seeded.pk])
    html = client.get(url).content.decode()
    assert 'id="budget-alert"' not in html  # 18 of 40
    assert 'data-chart="spend" data-points="18"' in html
    Budget.objects.filter(campaign=seeded).update(label_cap=19)
    html = client.get(url).content.decode()
    assert "95% of a cap is spent" in html
    Budget.objects.filter(campaign=seeded).update(label_cap=18)
    html = client.get(url).content.decode()
    assert "serves no more comparisons" in html


def test_ledger_filter_plain_and_htmx(client, researcher, seeded):
    client.force_login(researcher)
    url = reverse("insights:budget", args=[seeded.pk]) + "?source=judge"
    page = client.get(url).content.decode()
    assert "<html" in page and 'data-stat="ledger-count">6 entries' in page
    fragment = client.get(url, headers={"HX-Request": "true"})
    html = fragment.content.decode()
    assert "<html" not in html and html.strip().startswith('<div id="ledger-table">')
    assert "6 entries" in html
    assert "HX-Request" in fragment["Vary"]


def test_pause_and_raise_a_cap_are_audited(client, researcher, seeded):
    from rlhf_platform.campaigns.services import campaign_set_state

    campaign_set_state(campaign=seeded, action="start")
    client.force_login(researcher)
    client.post(reverse("insights:budget-state", args=[seeded.pk]), {"action": "pause"})
    seeded.refresh_from_db()
    assert seeded.state == "paused"
    client.post(reverse("insights:budget-caps", args=[seeded.pk]), {"label_cap": "100"})
    assert Budget.objects.get(campaign=seeded).label_cap == 100
    entries = list(AuditEntry.objects.filter(campaign=seeded).order_by("id"))
    assert [(e.action, e.before, e.after) for e in entries] == [
        ("pause", {"state": "running"}, {"state": "paused"}),
        ("change_caps", {"label_cap": 40}, {"label_cap": 100}),
    ]
    assert all(e.actor == researcher for e in entries)
    html = client.get(reverse("insights:budget", args=[seeded.pk])).content.decode()
    assert "Changed the budget caps" in html and "Paused the campaign" in html


def test_a_cap_below_what_is_spent_is_refused_and_not_logged(client, researcher, seeded):
    client.force_login(researcher)
    response = client.post(
        reverse("insights:budget-caps", args=[seeded.pk]), {"label_cap": "5"}, follow=True
    )
    assert "cannot go below the 18 labels" in response.content.decode()
    assert Budget.objects.get(campaign=seeded).label_cap == 40
    assert not AuditEntry.objects.exists()


def test_annotators_cannot_pause_or_change_caps(client, annotator, seeded):
    client.force_login(annotator)
    assert (
        client.post(
            reverse("insights:budget-state", args=[seeded.pk]), {"action": "pause"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            reverse("insights:budget-caps", args=[seeded.pk]), {"label_cap": "1000"}
        ).status_code
        == 403
    )
    assert Budget.objects.get(campaign=seeded).label_cap == 40
    assert not AuditEntry.objects.exists()


def test_csv_cells_cannot_become_spreadsheet_formulas(client, researcher, seeded):
    from rlhf_platform.campaigns.models import Prompt

    Prompt.objects.filter(campaign=seeded, text="Seeded prompt 4?").update(text="=HYPERLINK(1)")
    client.force_login(researcher)
    rows = _csv_rows(
        client.get(reverse("insights:agreement-csv", args=[seeded.pk, "disagreements"]))
    )
    assert rows[1][6] == "'=HYPERLINK(1)"


@pytest.mark.parametrize("page", ["campaign", "agreement", "budget"])
def test_pages_use_a_bounded_number_of_queries(
    client, researcher, annotator, seeded, page, django_assert_max_num_queries
):
    # Rows are read in bulk (no query per round, version, label or annotator), so other
    # campaigns' rows and a second campaign stay under the same bound.
    client.force_login(researcher)
    url = reverse(f"insights:{page}", args=[seeded.pk])
    with django_assert_max_num_queries(25):
        assert client.get(url).status_code == 200
    second = seed_campaign(researcher, [annotator], name="Second")
    seed_campaign(researcher, [annotator], name="Other")  # unrelated rows
    with django_assert_max_num_queries(25):
        assert client.get(reverse(f"insights:{page}", args=[second.pk])).status_code == 200
