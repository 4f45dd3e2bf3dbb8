"""No worker holds a database transaction while it loads or runs a model (issue 18).

On the embedded SQLite a transaction holds the one write lock (``transaction_mode``
IMMEDIATE), so a worker that loaded SmolLM2 inside one made every login wait behind it
(the first token request took 11 s). The ML entry points are wrapped here with spies that
record how deep in ``atomic`` blocks the caller was; every call must be at the depth the
test started at (pytest-django's own transaction).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from ml_worker.core import learner
from rlhf_platform.campaigns.services import campaign_set_state
from rlhf_platform.rounds.models import RoundState
from rlhf_platform.rounds.services import campaign_run_inline
from tests.rlhf_platform.rounds.conftest import live_campaign

ROOT = Path(__file__).resolve().parents[3]
ENTRY_POINTS = ("new_policy", "load_policy", "featurizer", "feature_dim", "load_reward_trainer")


@pytest.mark.django_db
def test_models_are_loaded_and_run_outside_any_transaction(researcher, monkeypatch):
    baseline = len(connection.atomic_blocks)
    depths: dict[str, list[int]] = {name: [] for name in ENTRY_POINTS}
    for name in ENTRY_POINTS:
        real = getattr(learner, name)

        def spy(*args, _name=name, _real=real, **kwargs):
            depths[_name].append(len(connection.atomic_blocks) - baseline)
            return _real(*args, **kwargs)

        monkeypatch.setattr(learner, name, spy)
    campaign = live_campaign(researcher, name="locks", algorithm="online", rounds=1)
    campaign_set_state(campaign=campaign, action="start")
    rounds = campaign_run_inline(campaign_id=campaign.pk, rounds=1)
    assert [r.state for r in rounds] == [RoundState.DONE], [r.failure_reason for r in rounds]
    assert depths["new_policy"] and depths["load_policy"], depths
    assert {d for calls in depths.values() for d in calls} == {0}, depths


def test_the_embedded_sqlite_uses_wal_and_a_busy_timeout(tmp_path):
    """A fresh process on the default database (no DATABASE_URL): WAL, 20 s busy timeout."""
    code = (
        "import django; django.setup();"
        "from django.db import connection;"
        "c = connection.cursor();"
        "print(c.execute('PRAGMA journal_mode').fetchone()[0],"
        " c.execute('PRAGMA busy_timeout').fetchone()[0])"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "rlhf_platform.settings",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["wal", "20000"]
