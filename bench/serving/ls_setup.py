"""Label Studio users and tokens (run with Label Studio's own Python and Django).

``python ls_setup.py --annotators 64`` creates (or reuses) an owner and annotators
``bench-annotator-<i>@bench.local`` in one organization with legacy API tokens enabled (the
``Authorization: Token`` scheme, as ``label-studio init --enable-legacy-api-token`` does),
and prints JSON ``{"owner_token", "tokens"}``. Projects and tasks are made through Label
Studio's REST API by the runner. This file imports nothing from our project.
"""

import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--annotators", type=int, required=True)
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
    import django

    django.setup()
    from jwt_auth.models import JWTSettings
    from organizations.models import Organization
    from rest_framework.authtoken.models import Token
    from users.models import User

    def user(email, superuser=False):
        u = User.objects.filter(email=email).first()
        if u is None:
            u = User.objects.create_user(email=email, password=None, username=email.split("@")[0])
            if superuser:
                u.is_staff = u.is_superuser = True
                u.save()
        return u

    owner = user("bench-owner@bench.local", superuser=True)
    org = Organization.objects.first()
    if org is None:
        org = Organization.create_organization(
            created_by=owner, title="Bench", legacy_api_tokens_enabled=True
        )
    jwt, _ = JWTSettings.objects.get_or_create(organization=org)
    if not jwt.legacy_api_tokens_enabled:
        jwt.legacy_api_tokens_enabled = True
        jwt.save()
    tokens = []
    for i in range(1, args.annotators + 1):
        u = user(f"bench-annotator-{i}@bench.local")
        if not org.has_user(u):
            org.add_user(u)
        if u.active_organization_id != org.pk:
            u.active_organization = org
            u.save(update_fields=["active_organization"])
        tokens.append(Token.objects.get_or_create(user=u)[0].key)
    if owner.active_organization_id != org.pk:
        owner.active_organization = org
        owner.save(update_fields=["active_organization"])
    owner_token = Token.objects.get_or_create(user=owner)[0].key
    json.dump({"owner_token": owner_token, "tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
