"""The round engine's entry point: do the step a round's state calls for.

``round_step`` claims the round's current state (``state.py``) and runs its step (generate,
select, learn or evaluate; a labeling round is closed when it can be). Transient database
errors release the claim and propagate for the task to retry; any other error fails the
round with its reason.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError

from rlhf_platform.rounds.evaluate import evaluate_step
from rlhf_platform.rounds.generate import generate_step
from rlhf_platform.rounds.judge import round_try_close
from rlhf_platform.rounds.learn import learn_step
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.select import select_step
from rlhf_platform.rounds.state import ClaimLost, new_token, round_claim, round_fail, round_release

log = logging.getLogger(__name__)


#: Errors worth a retry of the task (the step is released, not failed).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


def round_step(*, round_id: int) -> str | None:
    """Do the work of the round's current state, if nobody else is. Returns the new state.

    Transient database errors propagate (the task retries them); any other error fails the
    round with its reason, so a round never stays in a working state with nobody on it.
    """
    rnd = Round.objects.select_related("campaign").filter(pk=round_id).first()
    if rnd is None or rnd.state in (RoundState.DONE, RoundState.FAILED):
        return None
    if rnd.state == RoundState.LABELING:
        return round_try_close(round_id=round_id)
    steps = {
        RoundState.GENERATING: generate_step,
        RoundState.SELECTING: select_step,
        RoundState.LEARNING: learn_step,
        RoundState.EVALUATING: evaluate_step,
    }
    token = new_token()
    if not round_claim(round_id=round_id, state=rnd.state, token=token):
        return None
    try:
        return steps[RoundState(rnd.state)](rnd, token)
    except ClaimLost:
        log.warning("round %s: claim lost during %s; another worker continues", round_id, rnd.state)
        return None
    except TRANSIENT_ERRORS:
        round_release(round_id=round_id, token=token)
        raise
    except Exception as exc:
        log.exception("round %s failed in %s", round_id, rnd.state)
        round_fail(round_id=round_id, reason=f"{type(exc).__name__}: {exc}", token=token)
        return RoundState.FAILED
