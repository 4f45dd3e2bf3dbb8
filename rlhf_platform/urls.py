from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("rlhf_platform.api.urls")),
    path("", include("rlhf_platform.raters.urls")),
    path("", include("rlhf_platform.insights.urls")),
    path("", include("annotator_ui.urls")),
]

handler500 = "rlhf_platform.error_pages.server_error"
