"""Shared fixtures: a small named cast and a running campaign with queued comparisons.

Tests run against the real PostgreSQL and Redis of the machine (see the Makefile); the
database is never mocked.
"""

from __future__ import annotations

import shutil
from decimal import Decimal

import pytest

from rlhf_platform.accounts.models import Role, User
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.services import (
    campaign_add_member,
    campaign_create,
    campaign_set_state,
    comparisons_import_pairs,
)


def make_user(username: str, role: str = Role.ANNOTATOR, **extra) -> User:
    return User.objects.create_user(
        username=username, password="pw-" + username, role=role, **extra
    )


@pytest.fixture
def researcher(db) -> User:
    return make_user("rita", Role.RESEARCHER)


@pytest.fixture
def annotator(db) -> User:
    return make_user("anna")


@pytest.fixture
def other_annotator(db) -> User:
    return make_user("otto")


@pytest.fixture
def outsider(db) -> User:
    """An annotator who belongs to another campaign only."""
    return make_user("olga")


@pytest.fixture
def admin_user(db) -> User:
    return make_user("ada", Role.ADMIN, is_staff=True, is_superuser=True)


def make_campaign(
    owner: User,
    *,
    name: str = "Helpfulness",
    pairs: int = 5,
    members: tuple[User, ...] = (),
    start: bool = True,
    overlap: int = 1,
    label_cap: int | None = None,
    cost_cap: Decimal | None = None,
    human_label_cost: Decimal = Decimal("0.10"),
    annotator_daily_cap: int | None = None,
) -> Campaign:
    campaign = campaign_create(
        owner=owner,
        name=name,
        labels_per_comparison=overlap,
        label_cap=label_cap,
        cost_cap=cost_cap,
        human_label_cost=human_label_cost,
        annotator_daily_cap=annotator_daily_cap,
    )
    for user in members:
        campaign_add_member(campaign=campaign, user=user)
    comparisons_import_pairs(
        campaign=campaign,
        pairs=[
            {
                "prompt": f"{name} prompt {i}",
                "response_a": f"answer A{i}",
                "response_b": f"answer B{i}",
                "priority": i,
            }
            for i in range(pairs)
        ],
    )
    if start:
        campaign_set_state(campaign=campaign, action="start")
    return campaign


@pytest.fixture
def campaign(researcher, annotator, other_annotator) -> Campaign:
    return make_campaign(researcher, members=(annotator, other_annotator))


@pytest.fixture
def foreign_campaign(researcher, outsider) -> Campaign:
    return make_campaign(researcher, name="Other team", members=(outsider,))


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Login failure counts and throttles live in the cache: no test inherits another's."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """The default PBKDF2 hasher costs ~0.3 s per user on this machine; tests make many."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (never `playwright install`)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed, so the browser tests cannot run. "
            "Install it with scripts/ensure_chromium.sh (apt-get install -y chromium); "
            "never `playwright install`.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread while it runs; Django then
    # refuses ORM calls from the test code unless told it is safe (the tests are not async).
    # Only for the module using it: the browser is closed and the variable removed at its end.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
