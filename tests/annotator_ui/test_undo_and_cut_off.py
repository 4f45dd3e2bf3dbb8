"""The labeling page's undo (button and key ``u``), and "cut off at N tokens"."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.labeling.models import Label, Lease, LeaseState
from rlhf_platform.labeling.selectors import cut_off_at
from rlhf_platform.rounds.models import Response

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def _answer(client, campaign, **extra):
    client.post(reverse("annotator_ui:next", args=[campaign.pk]))  # "Next pair" leases
    lease = Lease.objects.get(campaign=campaign, state=LeaseState.ACTIVE)
    url = reverse("annotator_ui:submit", args=[lease.pk])
    return lease, client.post(url, {"choice": "A", "idempotency_key": f"k{lease.pk}"}, **extra)


@pytest.mark.parametrize("htmx", [False, True])
def test_undo_brings_the_pair_back(client, annotator, campaign, htmx):
    client.force_login(annotator)
    extra = HX if htmx else {}
    first, response = _answer(client, campaign, **extra)
    page = client.get(reverse("annotator_ui:label", args=[campaign.pk])).content.decode()
    label = Label.objects.get(annotator=annotator)
    assert f'action="/labels/{label.pk}/undo/"' in page and 'id="undo-button"' in page
    response = client.post(reverse("annotator_ui:undo", args=[label.pk]), **extra)
    assert not Label.objects.filter(annotator=annotator).exists()
    if htmx:
        html = response.content.decode()
        assert f'data-lease-id="{first.pk}"' in html and "Label undone" in html
        assert 'id="undo-button"' not in html  # nothing left to undo
    else:
        assert response.status_code == 302
        html = client.get(response["Location"]).content.decode()
        assert f'data-lease-id="{first.pk}"' in html


def test_undo_of_someone_elses_label_is_not_found(client, annotator, other_annotator, campaign):
    client.force_login(annotator)
    _answer(client, campaign)
    label = Label.objects.get(annotator=annotator)
    client.force_login(other_annotator)
    assert client.post(reverse("annotator_ui:undo", args=[label.pk])).status_code == 404
    assert Label.objects.filter(pk=label.pk).exists()


def test_a_response_cut_by_the_generation_limit_says_so(client, annotator, campaign):
    Campaign.objects.filter(pk=campaign.pk).update(
        policy_config={"backend": "smollm2", "max_new_tokens": 48}
    )
    Response.objects.filter(prompt__campaign=campaign).update(source="policy", token_count=48)
    client.force_login(annotator)
    client.post(reverse("annotator_ui:next", args=[campaign.pk]))
    html = client.get(reverse("annotator_ui:label", args=[campaign.pk])).content.decode()
    assert html.count("Cut off at 48 tokens") == 2
    Response.objects.filter(prompt__campaign=campaign).update(token_count=20)
    campaign.refresh_from_db()
    assert cut_off_at(Response.objects.first(), campaign.policy_config) is None
    # Imported responses never say so.
    Response.objects.update(source="imported", token_count=48)
    assert cut_off_at(Response.objects.first(), campaign.policy_config) is None
