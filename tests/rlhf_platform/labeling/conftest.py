"""Every labeling service test runs twice on PostgreSQL: through the hand-written SQL of
``rlhf_platform/labeling/pg.py`` (what PostgreSQL deployments run) and through the ORM
version (what SQLite runs), so the two cannot drift apart."""

from __future__ import annotations

import pytest

from rlhf_platform.labeling import services


@pytest.fixture(autouse=True, params=["sql", "orm"])
def labeling_path(request, monkeypatch) -> str:
    if request.param == "orm":
        monkeypatch.setattr(services, "hand_written_sql", lambda: False)
    return request.param
