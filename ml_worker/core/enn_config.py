"""The ENN reward model's configuration (:class:`ENNConfig`), torch-free.

It lives apart from :mod:`ml_worker.core.enn` so that the web process can check a campaign's
``reward_config`` when the campaign is created (:mod:`ml_worker.core.campaign_config`)
without importing torch. ``ml_worker.core.enn`` re-exports it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Bootstrap = Literal["none", "exponential", "bernoulli"]
RaterWeighting = Literal["off", "weighted"]


@dataclass
class ENNConfig:
    """Configuration of the ENN reward model and its trainer (JSON-serializable).

    The default widths keep 100 particles plus a 1024-wide point head at about 5-6% of
    SmolLM2-135M (576-wide features). The papers' widths (prior 2 x 256, differential
    2 x 1024) are meant for a 9B backbone.
    """

    feature_dim: int
    num_particles: int = 100
    prior_hidden: tuple[int, ...] = (32, 32)
    diff_hidden: tuple[int, ...] = (64, 64)
    point_hidden: tuple[int, ...] = (1024, 1024)
    prior_scale: float = 1.0
    normalize_features: bool = True
    #: Weight of ``sum((theta - theta_0) ** 2)`` per head (point head, each particle).
    l2_weight: float = 1e-3
    #: Adam learning rate of the particles' differential MLPs.
    lr: float = 1e-3
    #: Adam learning rate of the point head. Smaller than ``lr`` because the point head is
    #: 16x wider: with Adam each weight moves by about ``lr`` per step, so the output moves
    #: in proportion to the width.
    point_lr: float = 1e-4
    #: Adam updates per ``step`` call (one per round in the paper's online setting).
    gradient_steps: int = 1
    #: Per-particle bootstrap weights on each label, drawn once when the label arrives.
    bootstrap: Bootstrap = "none"
    bootstrap_prob: float = 0.5
    #: Replay buffer capacity (labels) and how many old labels join each step. The buffer is
    #: saved with every trainer version: 1024 labels of 576-wide features take 4.7 MB.
    replay_size: int = 1024
    replay_batch: int = 64
    #: From-scratch refit (offline / periodic algorithms).
    refit_epochs: int = 20
    refit_batch_size: int = 128
    seed: int = 0
    #: "weighted": the caller passes ``label_weights`` (each label's rater reliability, see
    #: ``ml_worker/core/raters.py``) to ``step`` / ``refit``; "off": every label counts 1.
    #: The trainer only records the choice; the round engine reads it to decide what to pass.
    rater_weighting: RaterWeighting = "off"

    def __post_init__(self) -> None:
        self.prior_hidden = tuple(int(h) for h in self.prior_hidden)
        self.diff_hidden = tuple(int(h) for h in self.diff_hidden)
        self.point_hidden = tuple(int(h) for h in self.point_hidden)
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if self.num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {self.num_particles}")
        if self.bootstrap not in ("none", "exponential", "bernoulli"):
            raise ValueError(f"unknown bootstrap {self.bootstrap!r}")
        if not 0.0 < self.bootstrap_prob <= 1.0:
            raise ValueError(f"bootstrap_prob must be in (0, 1], got {self.bootstrap_prob}")
        if self.replay_size < 0 or self.replay_batch < 0:
            raise ValueError("replay_size and replay_batch must be >= 0")
        if self.gradient_steps < 1:
            raise ValueError("gradient_steps must be >= 1")
        if self.rater_weighting not in ("off", "weighted"):
            raise ValueError(
                f"rater_weighting must be 'off' or 'weighted', got {self.rater_weighting!r}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ENNConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ENNConfig fields: {sorted(unknown)}")
        return cls(**data)
