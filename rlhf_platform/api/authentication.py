"""Token authentication in one statement built once (issue 21).

DRF's ``TokenAuthentication`` reads the token and its user with an ORM query that Django
compiles again on every request; profiling the labeling endpoints put a third of the web
process's CPU there. On PostgreSQL this class sends the same query as plain SQL, built when
the module is imported, and builds the user from its row; elsewhere it is DRF's. The rules
are DRF's: an unknown key or an inactive user is refused with the same messages.
"""

from __future__ import annotations

from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from rlhf_platform.accounts.models import User
from rlhf_platform.labeling import pg as labeling_pg

_USER_FIELDS = [f.attname for f in User._meta.concrete_fields]
TOKEN_USER = (
    f"SELECT t.created, {', '.join(f'u.{f}' for f in _USER_FIELDS)} "  # noqa: S608 (names from the models)
    f"FROM {Token._meta.db_table} t JOIN {User._meta.db_table} u ON u.id = t.user_id "
    "WHERE t.key = %s"
)


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key):
        if connection.vendor != "postgresql":
            return super().authenticate_credentials(key)
        with labeling_pg.cursor() as cur:
            cur.execute(TOKEN_USER, [key])
            row = cur.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = User.from_db(connection.alias, _USER_FIELDS, row[1:])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        token = Token(key=key, user=user, created=row[0])
        return user, token
