from __future__ import annotations

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from rlhf_platform.api import auth, campaigns, exports, labeling, raters, rounds
from rlhf_platform.api.common import UnknownEndpointApi

v1 = [
    path("auth/token/", auth.AuthTokenApi.as_view(), name="auth-token"),
    path("campaigns/", campaigns.CampaignListCreateApi.as_view(), name="campaigns"),
    path(
        "campaigns/<int:campaign_id>/",
        campaigns.CampaignDetailApi.as_view(),
        name="campaign-detail",
    ),
    path(
        "campaigns/<int:campaign_id>/state/",
        campaigns.CampaignStateApi.as_view(),
        name="campaign-state",
    ),
    path(
        "campaigns/<int:campaign_id>/members/",
        campaigns.CampaignMembersApi.as_view(),
        name="campaign-members",
    ),
    path(
        "campaigns/<int:campaign_id>/prompts/import/",
        campaigns.PromptImportApi.as_view(),
        name="campaign-prompts-import",
    ),
    path(
        "campaigns/<int:campaign_id>/progress/",
        campaigns.CampaignProgressApi.as_view(),
        name="campaign-progress",
    ),
    path(
        "campaigns/<int:campaign_id>/rounds/", rounds.RoundListApi.as_view(), name="campaign-rounds"
    ),
    path("rounds/<int:round_id>/retry/", rounds.RoundRetryApi.as_view(), name="round-retry"),
    path(
        "campaigns/<int:campaign_id>/next/",
        labeling.NextComparisonApi.as_view(),
        name="comparison-next",
    ),
    path("leases/<int:lease_id>/label/", labeling.LabelSubmitApi.as_view(), name="lease-label"),
    path("labels/<int:label_id>/undo/", labeling.LabelUndoApi.as_view(), name="label-undo"),
    path("leases/<int:lease_id>/skip/", labeling.LeaseSkipApi.as_view(), name="lease-skip"),
    path("leases/<int:lease_id>/renew/", labeling.LeaseRenewApi.as_view(), name="lease-renew"),
    path(
        "campaigns/<int:campaign_id>/exports/preferences/",
        exports.PreferenceExportApi.as_view(),
        name="campaign-export-preferences",
    ),
    path(
        "campaigns/<int:campaign_id>/exports/labels/",
        exports.LabelExportApi.as_view(),
        name="campaign-export-labels",
    ),
    path(
        "campaigns/<int:campaign_id>/imports/pairs/",
        exports.PairFileImportApi.as_view(),
        name="campaign-import-pairs",
    ),
    path(
        "campaigns/<int:campaign_id>/raters/",
        raters.CampaignRatersApi.as_view(),
        name="campaign-raters",
    ),
    path(
        "campaigns/<int:campaign_id>/raters/exclusion/",
        raters.RaterExclusionApi.as_view(),
        name="campaign-raters-exclusion",
    ),
    path(
        "campaigns/<int:campaign_id>/raters/gold/",
        raters.RaterGoldApi.as_view(),
        name="campaign-raters-gold",
    ),
    # Last: any other path ending in a slash gets the JSON 404 (paths without the slash
    # are still redirected to it by APPEND_SLASH first). [\s\S], not ".": a path segment
    # may hold an encoded newline, and it must get the JSON 404 too.
    re_path(r"^([\s\S]*/)?$", UnknownEndpointApi.as_view()),
]

urlpatterns = [
    path("v1/", include((v1, "api"), namespace="v1")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
