"""An interrupted demo picks up where it stopped (issue 18).

``make demo`` runs one worker. Stopped with Ctrl-C in the middle of a round step, it leaves
that step claimed; the next ``make demo`` runs ``manage.py resume_rounds`` before starting
its worker, which takes the claim back and sends the step again, so the round resumes at
once instead of after ``ROUND_CLAIM_STALE_SECONDS`` (10 minutes).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from rlhf_platform.campaigns.services import campaign_set_state
from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.services import campaign_open_round, campaign_run_inline, round_step
from rlhf_platform.rounds.state import round_claim
from tests.rlhf_platform.rounds.conftest import live_campaign

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.django_db


def test_a_round_left_claimed_by_a_stopped_worker_resumes_at_once(researcher):
    campaign = live_campaign(researcher, name="interrupted", algorithm="online", rounds=1)
    with dispatch.inline() as pop:
        campaign_set_state(campaign=campaign, action="start")
        rnd = campaign_open_round(campaign_id=campaign.pk)
        assert rnd.state == RoundState.GENERATING
        # The demo's worker claimed the generation step, then Ctrl-C stopped it.
        assert round_claim(round_id=rnd.pk, state=RoundState.GENERATING, token="gone")
        round_step(round_id=rnd.pk)  # a new worker finds the step held: nothing happens
        rnd.refresh_from_db()
        assert (rnd.state, rnd.claim_token) == (RoundState.GENERATING, "gone")

        out = io.StringIO()
        call_command("resume_rounds", stdout=out)
        assert f"Resuming round 0 of campaign {campaign.pk} at generating" in out.getvalue()
        rnd.refresh_from_db()
        assert rnd.claim_token == "" and rnd.claimed_at is None
        while pop() is not None:  # what was sent before, and the resent step
            pass
    rounds = campaign_run_inline(campaign_id=campaign.pk, rounds=1)
    assert [r.pk for r in rounds] == [rnd.pk]
    assert Round.objects.get(pk=rnd.pk).state == RoundState.DONE


def test_with_nothing_interrupted_it_changes_nothing(researcher):
    out = io.StringIO()
    call_command("resume_rounds", stdout=out)
    assert "No interrupted round" in out.getvalue()


def test_make_demo_resumes_before_it_starts_its_worker():
    script = (ROOT / "scripts" / "demo.sh").read_text()
    assert script.index("manage.py resume_rounds") < script.index('exec "$VENV_BIN/honcho"')
