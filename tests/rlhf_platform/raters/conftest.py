"""Fixtures of the raters tests: the API tests' client factory."""

from tests.rlhf_platform.api.conftest import client_for

__all__ = ["client_for"]
