from __future__ import annotations

from django.urls import include, path

from annotator_ui import views

app_name_patterns = [
    path("", views.home, name="home"),
    path("campaigns/<int:campaign_id>/label/", views.label_page, name="label"),
    path("campaigns/<int:campaign_id>/label/next/", views.label_next_view, name="next"),
    path("leases/<int:lease_id>/label/", views.label_submit_view, name="submit"),
    path("leases/<int:lease_id>/skip/", views.lease_skip_view, name="skip"),
    path("labels/<int:label_id>/undo/", views.label_undo_view, name="undo"),
    path("leases/<int:lease_id>/renew/", views.lease_renew_view, name="renew"),
]

urlpatterns = [
    # Un-namespaced: settings.LOGIN_URL and LOGOUT_REDIRECT_URL name "login".
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("", include((app_name_patterns, "annotator_ui"))),
]
