"""The round engine's public services, in one place for tasks, commands and tests.

Each is defined in the module of its step (see the package docstring in ``__init__.py``).
Importing this module imports torch: the web process imports ``state`` and ``dispatch``
only.
"""

from __future__ import annotations

from rlhf_platform.rounds.engine import TRANSIENT_ERRORS, round_step
from rlhf_platform.rounds.inline import campaign_run_inline
from rlhf_platform.rounds.judge import judge_trial_run, round_judge, round_try_close
from rlhf_platform.rounds.opening import campaign_open_round
from rlhf_platform.rounds.state import ClaimLost, round_retry
from rlhf_platform.rounds.sweep import rounds_resume_interrupted, rounds_sweep
from rlhf_platform.rounds.versions import artifact_path, ensure_initial_versions

__all__ = [
    "TRANSIENT_ERRORS",
    "ClaimLost",
    "artifact_path",
    "campaign_open_round",
    "campaign_run_inline",
    "ensure_initial_versions",
    "judge_trial_run",
    "round_judge",
    "round_retry",
    "round_step",
    "round_try_close",
    "rounds_resume_interrupted",
    "rounds_sweep",
]
