"""Fixtures of the API tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from rlhf_platform.accounts.models import User


@pytest.fixture
def client_for() -> Callable[[User | None], APIClient]:
    """An API client logged in as ``user`` (by session), or anonymous for None."""

    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return make
