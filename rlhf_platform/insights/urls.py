from __future__ import annotations

from django.urls import path

from rlhf_platform.insights import setup_views, views

app_name = "insights"

urlpatterns = [
    path("research/", views.research_home, name="research"),
    path("research/compare/", views.compare_page, name="compare"),
    path("research/campaigns/new/", setup_views.campaign_new, name="campaign-new"),
    path("research/judges/try/", setup_views.judge_try, name="judge-try"),
    path(
        "research/judges/trials/<int:trial_id>/",
        setup_views.judge_trial_page,
        name="judge-trial",
    ),
    path(
        "research/campaigns/<int:campaign_id>/manage/",
        setup_views.campaign_manage,
        name="manage",
    ),
    path(
        "research/campaigns/<int:campaign_id>/state/",
        setup_views.campaign_state,
        name="campaign-state",
    ),
    path(
        "research/campaigns/<int:campaign_id>/import/",
        setup_views.campaign_import,
        name="campaign-import",
    ),
    path(
        "research/campaigns/<int:campaign_id>/members/",
        setup_views.members_add,
        name="members-add",
    ),
    path(
        "research/campaigns/<int:campaign_id>/members/remove/",
        setup_views.members_remove,
        name="members-remove",
    ),
    path(
        "research/campaigns/<int:campaign_id>/invites/",
        setup_views.invite_new,
        name="invite-new",
    ),
    path(
        "research/campaigns/<int:campaign_id>/invites/<int:invite_id>/revoke/",
        setup_views.invite_revoke,
        name="invite-revoke",
    ),
    path("research/campaigns/<int:campaign_id>/labels/", setup_views.labels_page, name="labels"),
    path(
        "research/campaigns/<int:campaign_id>/labels/<int:label_id>/flag/",
        setup_views.label_flag,
        name="label-flag",
    ),
    path("invites/<str:token>/", setup_views.invite_page, name="invite"),
    path("research/compare/<slug:chart>.csv", views.compare_csv, name="compare-csv"),
    path("research/campaigns/<int:campaign_id>/", views.campaign_page, name="campaign"),
    path(
        "research/campaigns/<int:campaign_id>/<slug:chart>.csv",
        views.campaign_csv,
        name="campaign-csv",
    ),
    path(
        "research/campaigns/<int:campaign_id>/agreement/",
        views.agreement_page,
        name="agreement",
    ),
    path(
        "research/campaigns/<int:campaign_id>/agreement/<slug:table>.csv",
        views.agreement_csv,
        name="agreement-csv",
    ),
    path("budgets/", views.budgets_home, name="budgets"),
    path("budgets/campaigns/<int:campaign_id>/", views.budget_page, name="budget"),
    path(
        "budgets/campaigns/<int:campaign_id>/<slug:table>.csv",
        views.budget_csv,
        name="budget-csv",
    ),
    path("budgets/campaigns/<int:campaign_id>/state/", views.budget_state, name="budget-state"),
    path("budgets/campaigns/<int:campaign_id>/caps/", views.budget_caps, name="budget-caps"),
]
