from __future__ import annotations

from django.urls import path

from rlhf_platform.insights import views

app_name = "insights"

urlpatterns = [
    path("research/", views.research_home, name="research"),
    path("research/compare/", views.compare_page, name="compare"),
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
