"""Online rounds: generate, select, label (human, judge or both), learn, evaluate.

Each step is an idempotent service taking a round ID: it claims the round's current state
(see ``state.py``), does its work, writes its results in one transaction with the
conditional UPDATE that advances the round, and dispatches the next step on commit. A step
re-run after a crash starts over from what the database holds: responses and comparisons
of an unfinished step are replaced, a model version already registered for the round is
reused, and artifact folders are written under a temporary name and renamed when complete.

The four algorithms (DESIGN.md section 2) are the ML core's `ml_worker.core.rounds`: its
schedule, the round's prompts, the choice of pairs, the online step and the refit, which the
benchmark's simulation calls too (the steps here read and write the database around them):
- offline: every round samples from the initial policy; nothing is learned until the last
  round, which refits the reward model on all labels and then optimizes the policy
  against that frozen reward model (one step per round so far);
- periodic: every ``periodic_tau`` rounds (and at the last), refit the reward model and the
  policy from their initial weights on everything gathered so far;
- online and infomax: one incremental reward-model step and one policy step every round
  (they differ only in the acquisition rule the campaign uses, uniform, infomax or double
  Thompson sampling).

The modules, one per part of the engine:
- ``models``: Round, Response, ModelVersion, Evaluation (and ``admin``, their admin pages);
- ``state``: the state machine and the claims a step holds (torch-free: the web uses it);
- ``dispatch``: where the next piece of work goes, Celery or an in-process queue (torch-free);
- ``versions``: model-version files and their registration;
- ``opening``: opening a campaign's rounds; whether it is done; a round's seeds;
- ``engine``: ``round_step``, which runs the step a round's state calls for;
- ``generate``, ``select``, ``judge`` (label and close), ``learn``, ``evaluate``: the steps;
- ``sweep``: overdue rounds, lost messages, dead workers, resuming after an interruption;
- ``inline``: a campaign's rounds in the foreground, without a worker;
- ``services``: the public services of all of these in one place (they import torch).
"""
