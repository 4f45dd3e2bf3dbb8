from __future__ import annotations

from django.urls import path

from rlhf_platform.raters import views

app_name = "raters"

urlpatterns = [
    path("research/raters/", views.raters_admin, name="admin"),
    path("research/campaigns/<int:campaign_id>/raters/", views.raters_page, name="campaign"),
    path(
        "research/campaigns/<int:campaign_id>/raters/exclusion/",
        views.rater_exclusion,
        name="exclusion",
    ),
    path("research/campaigns/<int:campaign_id>/raters/gold/", views.gold, name="gold"),
]
