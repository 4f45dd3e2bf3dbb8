"""Foreground runs (management command, notebooks, tests): a campaign's rounds in this
process, without a worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rlhf_platform.rounds import dispatch
from rlhf_platform.rounds.engine import round_step
from rlhf_platform.rounds.judge import round_judge, round_try_close
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.opening import campaign_open_round


def campaign_run_inline(
    *,
    campaign_id: int,
    rounds: int,
    poll_seconds: float = 2.0,
    on_round_done: Callable[[Round], None] | None = None,
) -> list[Round]:
    """Run up to ``rounds`` rounds in this process, without a worker.

    Judge campaigns run straight through; human campaigns wait (polling) in each labeling
    state until annotators finish the round or its deadline passes.
    """
    finished: list[Round] = []
    with dispatch.inline() as pop:
        for _ in range(rounds):
            rnd = campaign_open_round(campaign_id=campaign_id)
            if rnd is None:
                break
            while True:
                item = pop()
                if item is None:
                    rnd.refresh_from_db()
                    if rnd.state in (RoundState.DONE, RoundState.FAILED):
                        break
                    if rnd.state == RoundState.LABELING:
                        round_judge(round_id=rnd.pk)
                        if round_try_close(round_id=rnd.pk) == RoundState.LABELING:
                            time.sleep(poll_seconds)
                        continue
                    round_step(round_id=rnd.pk)  # e.g. a released claim
                    continue
                kind, object_id = item
                if kind == "judge":
                    round_judge(round_id=object_id)
                elif kind == "open":
                    campaign_open_round(campaign_id=object_id)
                else:
                    round_step(round_id=object_id)
            finished.append(rnd)
            if on_round_done is not None:
                on_round_done(rnd)
            if rnd.state == RoundState.FAILED:
                break
    return finished
