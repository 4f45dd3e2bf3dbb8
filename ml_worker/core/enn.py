"""Epistemic neural network (ENN) reward model over frozen backbone features.

One module, one idea: a reward model that knows what it does not know.

- A *point head*: an MLP ``D -> 1024 -> 1024 -> 1`` giving the reward estimate used by the
  policy update (``point(features) -> [N]``).
- ``M`` *particles* (paper: 100). Particle ``m`` is ``prior_scale * prior_m(x) + diff_m(x)``
  where ``prior_m`` is a frozen, randomly initialized MLP (``D -> 32 -> 32 -> 1``) and
  ``diff_m`` a trainable differential MLP (``D -> 64 -> 64 -> 1``). The particles agree where
  the data pinned them down and disagree elsewhere; that disagreement is what the
  information-directed acquisition rule measures. All particles are evaluated at once with
  stacked weights ``[M, in, out]`` (one einsum, then ``baddbmm``), never a Python loop.

Training (``ENNTrainer``): Bradley-Terry cross-entropy on ``r_a - r_b`` with targets 1 (A
better), 0 (B better) and 1/2 (tie); "both bad" labels carry no preference and are excluded
(``choices_to_targets`` gives the mask). Every trainable weight is pulled toward its initial
value by an L2 term (the anchor that keeps particles diverse where there is no data). Particles
are trained on the same loss, optionally with per-particle bootstrap weights on each label.

Features are standardized by a parameter-free layer norm before the heads (config
``normalize_features``), so that the random priors have outputs of order ``prior_scale``
whatever the backbone's activation scale.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ml_worker.core.choice import Choice
from ml_worker.core.enn_config import ENNConfig

__all__ = [
    "CHOICE_TARGETS",
    "ENNConfig",
    "ENNRewardModel",
    "ENNTrainer",
    "ReplayBuffer",
    "bt_loss",
    "choices_to_targets",
    "overhead_percent",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"

#: Label choice -> Bradley-Terry target for "A preferred" (:attr:`Choice.target`): "both_bad"
#: has no preference and no target.
CHOICE_TARGETS: dict[str, float | None] = {c.value: c.target for c in Choice}

# --------------------------------------------------------------------------------------------
# Labels and loss
# --------------------------------------------------------------------------------------------


def choices_to_targets(choices: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Map label choices to Bradley-Terry targets.

    ``choices``: ``"A"`` (A better), ``"B"``, ``"tie"`` or ``"both_bad"``.
    Returns ``(targets: float32[N], mask: bool[N])``; ``mask`` is False for "both_bad" (no
    preference: kept out of the reward loss, the caller still stores the label) and its
    target is set to 0.5 so that the tensor holds no garbage. Unknown choices raise.
    """
    targets = torch.empty(len(choices), dtype=torch.float32)
    mask = torch.empty(len(choices), dtype=torch.bool)
    for i, choice in enumerate(choices):
        target = Choice.parse(choice).target
        targets[i] = 0.5 if target is None else target
        mask[i] = target is not None
    return targets, mask


def bt_loss(r_a: Tensor, r_b: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Bradley-Terry cross-entropy, mean over labels (per particle when batched).

    ``r_a, r_b``: ``[N]`` or ``[M, N]``; ``targets``: ``[N]`` in {1, 0, 0.5} (a tie is half a
    win each way); ``weights``: optional ``[N]`` or ``[M, N]`` (bootstrap weights).
    Returns ``[]`` for ``[N]`` inputs and ``[M]`` (one loss per particle) for ``[M, N]``.
    """
    logits = r_a - r_b
    targets = targets.to(logits.dtype).expand_as(logits)
    losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weights is not None:
        losses = losses * weights
    return losses.mean(dim=-1)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def _he_normal(shape: Sequence[int], fan_in: int, gain: float, gen: torch.Generator) -> Tensor:
    return torch.randn(*shape, generator=gen) * (gain / math.sqrt(fan_in))


def _mlp_weights(
    dims: Sequence[int], gen: torch.Generator, stack: int | None
) -> list[tuple[Tensor, Tensor]]:
    """He-initialized weights for an MLP ``dims[0] -> ... -> dims[-1]``.

    With ``stack=M`` each weight is ``[M, in, out]`` and each bias ``[M, out]``; otherwise
    ``[in, out]`` and ``[out]``. The last layer has gain 1 (linear output of order 1 for
    standardized inputs), hidden layers gain sqrt(2) (ReLU). Biases start at zero.
    """
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        gain = 1.0 if i == len(dims) - 2 else math.sqrt(2.0)
        lead = (stack,) if stack is not None else ()
        w = _he_normal((*lead, d_in, d_out), d_in, gain, gen)
        b = torch.zeros(*lead, d_out)
        layers.append((w, b))
    return layers


def _batched_mlp(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """All particles at once. ``x: [N, D]``, ``weights[i]: [M, in, out]``, ``biases[i]: [M, out]``.

    Returns ``[M, N]``.
    """
    h = torch.einsum("nd,mdh->mnh", x, weights[0]) + biases[0].unsqueeze(1)
    for w, b in zip(weights[1:], biases[1:], strict=True):
        h = torch.baddbmm(b.unsqueeze(1), torch.relu(h), w)
    return h.squeeze(-1)


def _mlp(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> Tensor:
    """``x: [N, D]`` -> ``[N]`` with weights ``[in, out]``."""
    h = torch.addmm(biases[0], x, weights[0])
    for w, b in zip(weights[1:], biases[1:], strict=True):
        h = torch.addmm(b, torch.relu(h), w)
    return h.squeeze(-1)


class ENNRewardModel(nn.Module):
    """Point-estimate head plus ``M`` prior+differential particles over frozen features.

    Parameters (trainable): ``point_w{i}``, ``point_b{i}``, ``diff_w{i}``, ``diff_b{i}``.
    Buffers (frozen, saved): the priors ``prior_w{i}``, ``prior_b{i}`` and a copy of every
    trainable tensor at initialization (``init_<name>``) for the L2 anchor and for ``refit``.
    """

    def __init__(self, config: ENNConfig) -> None:
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        d, m = config.feature_dim, config.num_particles

        point = _mlp_weights((d, *config.point_hidden, 1), gen, stack=None)
        diff = _mlp_weights((d, *config.diff_hidden, 1), gen, stack=m)
        prior = _mlp_weights((d, *config.prior_hidden, 1), gen, stack=m)
        self.num_point_layers = len(point)
        self.num_diff_layers = len(diff)
        self.num_prior_layers = len(prior)
        for prefix, layers in (("point", point), ("diff", diff)):
            for i, (w, b) in enumerate(layers):
                self.register_parameter(f"{prefix}_w{i}", nn.Parameter(w))
                self.register_parameter(f"{prefix}_b{i}", nn.Parameter(b))
        for i, (w, b) in enumerate(prior):
            self.register_buffer(f"prior_w{i}", w)
            self.register_buffer(f"prior_b{i}", b)
        for name, p in self.named_parameters():
            self.register_buffer(f"init_{name}", p.detach().clone())

    # ---- weights -------------------------------------------------------------------------

    def _layers(self, prefix: str, n: int) -> tuple[list[Tensor], list[Tensor]]:
        return (
            [getattr(self, f"{prefix}_w{i}") for i in range(n)],
            [getattr(self, f"{prefix}_b{i}") for i in range(n)],
        )

    def point_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.startswith("point_")]

    def particle_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name.startswith("diff_")]

    def initial(self, name: str) -> Tensor:
        """The initial value of trainable parameter ``name``."""
        return cast(Tensor, getattr(self, f"init_{name}"))

    @torch.no_grad()
    def reset_to_initial(self) -> None:
        """Restore every trainable weight to its value at initialization."""
        for name, p in self.named_parameters():
            p.copy_(self.initial(name))

    # ---- forward -------------------------------------------------------------------------

    def prepare(self, features: Tensor) -> Tensor:
        """``[N, D]`` -> standardized float32 ``[N, D]`` (parameter-free layer norm)."""
        if features.dim() != 2 or features.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"features must be [N, {self.config.feature_dim}], got {tuple(features.shape)}"
            )
        ref = cast(Tensor, self.point_w0)
        x = features.to(dtype=ref.dtype, device=ref.device)
        if self.config.normalize_features:
            x = F.layer_norm(x, (x.shape[1],))
        return x

    def point(self, features: Tensor) -> Tensor:
        """Point reward estimate. ``features: [N, D]`` -> ``[N]``."""
        return self._point(self.prepare(features))

    def particles(self, features: Tensor) -> Tensor:
        """Particle rewards. ``features: [N, D]`` -> ``[M, N]``."""
        return self._particles(self.prepare(features))

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``features: [N, D]`` -> ``(point: [N], particles: [M, N])``."""
        x = self.prepare(features)
        return self._point(x), self._particles(x)

    def _point(self, x: Tensor) -> Tensor:
        return _mlp(x, *self._layers("point", self.num_point_layers))

    def _particles(self, x: Tensor) -> Tensor:
        diff = _batched_mlp(x, *self._layers("diff", self.num_diff_layers))
        prior = _batched_mlp(x, *self._layers("prior", self.num_prior_layers))
        return diff + self.config.prior_scale * prior

    # ---- regularization ------------------------------------------------------------------

    def l2_to_init(self) -> tuple[Tensor, Tensor]:
        """``(point: [], particles: [M])``: squared distance of the weights to their init."""
        point = sum(
            ((p - self.initial(n)) ** 2).sum()
            for n, p in self.named_parameters()
            if n.startswith("point_")
        )
        particles = sum(
            ((p - self.initial(n)) ** 2).flatten(1).sum(dim=1)
            for n, p in self.named_parameters()
            if n.startswith("diff_")
        )
        return point, particles  # type: ignore[return-value]

    # ---- size ----------------------------------------------------------------------------

    def parameter_breakdown(self) -> dict[str, int]:
        """Number of weights per part: point head, trainable differentials, frozen priors."""
        point = sum(p.numel() for p in self.point_parameters())
        diff = sum(p.numel() for p in self.particle_parameters())
        prior = sum(
            getattr(self, f"prior_{k}{i}").numel()
            for k in "wb"
            for i in range(self.num_prior_layers)
        )
        return {"point": point, "differential": diff, "prior": prior, "total": point + diff + prior}

    def parameter_count(self, *, trainable_only: bool = False) -> int:
        """Weights of the heads (point + particles, frozen priors included unless asked not)."""
        parts = self.parameter_breakdown()
        return parts["point"] + parts["differential"] + (0 if trainable_only else parts["prior"])

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into directory ``path``.

        Each file is written to a temporary name and renamed into place; ``config.json`` is
        written last, so a directory with a config always holds complete weights.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        _atomic_write(path / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
        _atomic_write(path / CONFIG_FILE, lambda p: p.write_text(self.config.to_json()))

    @classmethod
    def load(cls, path: str | Path, *, map_location: str | torch.device = "cpu") -> ENNRewardModel:
        path = Path(path)
        config = ENNConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        model = cls(config)
        state = load_file(str(path / WEIGHTS_FILE), device=str(map_location))
        model.load_state_dict(state, strict=True)
        return model.to(map_location)


def overhead_percent(head_parameters: int, backbone_parameters: int) -> float:
    """Head parameters as a percentage of the backbone's (paper: under 5%)."""
    if backbone_parameters <= 0:
        raise ValueError("backbone_parameters must be positive")
    return 100.0 * head_parameters / backbone_parameters


def _atomic_write(target: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Replay buffer
# --------------------------------------------------------------------------------------------


@dataclass
class ReplayBuffer:
    """Bounded store of past labels with reservoir insertion and seeded sampling.

    Reservoir sampling keeps a uniform sample of *all* labels seen so far (not just the last
    ``capacity``), so early rounds are not forgotten. Storage: ``features_a, features_b:
    [n, D]``, ``targets: [n]``, ``weights: [M, n]`` (bootstrap weights, ones if unused),
    ``label_weights: [n]`` (each label's rater weight, ones if unused): a replayed label keeps
    the weight it arrived with.
    """

    capacity: int
    feature_dim: int
    num_particles: int
    seen: int = 0
    features_a: Tensor = field(init=False)
    features_b: Tensor = field(init=False)
    targets: Tensor = field(init=False)
    weights: Tensor = field(init=False)
    label_weights: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.seen = 0
        self.features_a = torch.empty(0, self.feature_dim)
        self.features_b = torch.empty(0, self.feature_dim)
        self.targets = torch.empty(0)
        self.weights = torch.empty(self.num_particles, 0)
        self.label_weights = torch.empty(0)
        self.sampled_label_weights = torch.empty(0)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def add(
        self,
        features_a: Tensor,
        features_b: Tensor,
        targets: Tensor,
        weights: Tensor,
        gen: torch.Generator,
        label_weights: Tensor | None = None,
    ) -> None:
        """Insert ``n`` labels (``weights: [M, n]``, ``label_weights: [n]``) by reservoir
        sampling."""
        fa, fb = features_a.detach().float().cpu(), features_b.detach().float().cpu()
        t, w = targets.detach().float().cpu(), weights.detach().float().cpu()
        lw = (
            torch.ones(t.shape[0])
            if label_weights is None
            else label_weights.detach().float().cpu()
        )
        if self.capacity == 0:
            self.seen += t.shape[0]
            return
        room = max(0, self.capacity - len(self))
        head = min(room, t.shape[0])
        if head:
            self.features_a = torch.cat([self.features_a, fa[:head]])
            self.features_b = torch.cat([self.features_b, fb[:head]])
            self.targets = torch.cat([self.targets, t[:head]])
            self.weights = torch.cat([self.weights, w[:, :head]], dim=1)
            self.label_weights = torch.cat([self.label_weights, lw[:head]])
            self.seen += head
        for i in range(head, t.shape[0]):
            self.seen += 1
            j = int(torch.randint(self.seen, (1,), generator=gen))
            if j < self.capacity:
                self.features_a[j] = fa[i]
                self.features_b[j] = fb[i]
                self.targets[j] = t[i]
                self.weights[:, j] = w[:, i]
                self.label_weights[j] = lw[i]

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Up to ``n`` distinct stored labels, uniformly at random (seeded); their label
        weights are ``sampled_label_weights`` (same draw) until the next ``sample``."""
        n = min(n, len(self))
        idx = torch.randperm(len(self), generator=gen)[:n]
        self.sampled_label_weights = self.label_weights[idx]
        return self.features_a[idx], self.features_b[idx], self.targets[idx], self.weights[:, idx]

    def state_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "features_a": self.features_a,
            "features_b": self.features_b,
            "targets": self.targets,
            "weights": self.weights,
            "label_weights": self.label_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.features_a = state["features_a"]
        self.features_b = state["features_b"]
        self.targets = state["targets"]
        self.weights = state["weights"]
        # Buffers saved before rater weighting existed: every label counted 1.
        self.label_weights = state.get("label_weights", torch.ones(self.targets.shape[0]))


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


class ENNTrainer:
    """Trains an ``ENNRewardModel``: incremental ``step`` (online) and ``refit`` (offline).

    Everything random (bootstrap weights, replay insertion and sampling, refit shuffling) draws
    from one generator seeded by ``config.seed``, so a run is reproducible and a saved trainer
    resumes exactly where it stopped.
    """

    def __init__(self, model: ENNRewardModel | ENNConfig) -> None:
        self.model = model if isinstance(model, ENNRewardModel) else ENNRewardModel(model)
        self.config = self.model.config
        self.generator = torch.Generator().manual_seed(self.config.seed + 1)
        self.replay = ReplayBuffer(
            self.config.replay_size, self.config.feature_dim, self.config.num_particles
        )
        self.optimizer = self._new_optimizer()
        self.steps = 0

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            [
                {"params": self.model.point_parameters(), "lr": self.config.point_lr},
                {"params": self.model.particle_parameters(), "lr": self.config.lr},
            ]
        )

    # ---- loss ----------------------------------------------------------------------------

    def bootstrap_weights(self, n: int) -> Tensor:
        """``[M, n]`` per-particle weights of ``n`` new labels (ones without bootstrap)."""
        m = self.config.num_particles
        if self.config.bootstrap == "exponential":
            u = torch.rand(m, n, generator=self.generator)
            return -torch.log1p(-u)  # Exp(1): mean 1, a smooth Bayesian bootstrap
        if self.config.bootstrap == "bernoulli":
            p = self.config.bootstrap_prob
            return (torch.rand(m, n, generator=self.generator) < p).float() / p
        return torch.ones(m, n)

    def loss(
        self,
        features_a: Tensor,
        features_b: Tensor,
        targets: Tensor,
        weights: Tensor | None = None,
        label_weights: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss = point BT + L2 + sum over particles of (weighted BT + L2).

        Particle losses are summed, not averaged, so that each particle's gradient is the
        gradient of its own objective whatever ``M``. ``features_*: [N, D]``, ``targets: [N]``,
        ``weights: [M, N]``; ``label_weights: [N]`` (rater reliabilities, >= 0) weight the
        point head's and every particle's loss, rescaled to mean 1 over the batch so that they
        shift trust between labels without changing the balance against the L2 anchor (a
        batch whose weights are all 0 contributes no data term).
        """
        n = targets.shape[0]
        model = self.model
        x = model.prepare(torch.cat([features_a, features_b]))
        targets = targets.to(x.device, x.dtype)
        point = model._point(x)
        parts = model._particles(x)
        weights = None if weights is None else weights.to(x.device, x.dtype)
        lw = None
        if label_weights is not None:
            lw = label_weights.to(x.device, x.dtype)
            total_w = lw.sum()
            lw = lw * (n / total_w) if float(total_w) > 0 else torch.zeros_like(lw)
            weights = lw if weights is None else weights * lw
        point_bt = bt_loss(point[:n], point[n:], targets, lw)
        particle_bt = bt_loss(parts[:, :n], parts[:, n:], targets, weights)  # [M]
        point_l2, particle_l2 = model.l2_to_init()
        lam = self.config.l2_weight
        total = point_bt + lam * point_l2 + (particle_bt + lam * particle_l2).sum()
        metrics = {
            "loss": float(total.detach()),
            "point_bt": float(point_bt.detach()),
            "particle_bt": float(particle_bt.detach().mean()),
            "point_l2": float(point_l2.detach()),
            "particle_l2": float(particle_l2.detach().mean()),
        }
        return total, metrics

    def _update(
        self,
        features_a: Tensor,
        features_b: Tensor,
        targets: Tensor,
        weights: Tensor,
        label_weights: Tensor | None = None,
    ) -> dict[str, float]:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, metrics = self.loss(features_a, features_b, targets, weights, label_weights)
        total.backward()
        self.optimizer.step()
        self.steps += 1
        return metrics

    # ---- public API ----------------------------------------------------------------------

    def step(
        self,
        features_a: Tensor,
        features_b: Tensor,
        targets: Tensor,
        mask: Tensor | None = None,
        *,
        label_weights: Tensor | None = None,
    ) -> dict[str, float]:
        """One incremental update on new labels plus a replay sample of older ones.

        ``features_a, features_b: [N, D]`` (responses A and B of each new label), ``targets:
        [N]`` in {1, 0, 0.5}; ``mask: bool[N]`` drops labels (e.g. "both bad", see
        ``choices_to_targets``). The new labels join the replay buffer afterwards. With no new
        label left the call changes nothing. ``label_weights: [N]`` (>= 0, e.g. each label's
        rater reliability) weight each label's loss and stay with it in the replay buffer.
        Returns the metrics of the last gradient step (computed before it was applied).
        """
        lw = _check_label_weights(label_weights, targets, mask)
        features_a, features_b, targets = _check_batch(features_a, features_b, targets, mask)
        if targets.shape[0] == 0:  # nothing new (e.g. only "both bad"): no update at all
            return {"n_new": 0.0, "n_replay": 0.0}
        new_w = self.bootstrap_weights(targets.shape[0])
        old_a, old_b, old_t, old_w = self.replay.sample(self.config.replay_batch, self.generator)
        old_lw = self.replay.sampled_label_weights
        n_replay = int(old_t.shape[0])
        if n_replay:
            device = features_a.device
            fa = torch.cat([features_a, old_a.to(device)])
            fb = torch.cat([features_b, old_b.to(device)])
            t = torch.cat([targets, old_t.to(device)])
            w = torch.cat([new_w, old_w], dim=1)
            all_lw = (
                None
                if lw is None and bool((old_lw == 1).all())
                else torch.cat([torch.ones(targets.shape[0]) if lw is None else lw, old_lw])
            )
        else:
            fa, fb, t, w, all_lw = features_a, features_b, targets, new_w, lw
        metrics: dict[str, float] = {}
        for _ in range(self.config.gradient_steps):
            metrics = self._update(fa, fb, t, w, all_lw)
        self.replay.add(features_a, features_b, targets, new_w, self.generator, lw)
        metrics.update({"n_new": float(targets.shape[0]), "n_replay": float(n_replay)})
        return metrics

    def refit(
        self,
        features_a: Tensor,
        features_b: Tensor,
        targets: Tensor,
        mask: Tensor | None = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        label_weights: Tensor | None = None,
    ) -> dict[str, float]:
        """Reset to the initial weights and fit from scratch on all the given labels.

        For the offline and periodic algorithms. Everything is reset as in a fresh trainer
        (weights, optimizer, replay buffer, generator, step count), so a refit depends only on
        the config and the data, not on what the trainer did before. Afterwards the replay
        buffer holds these labels, so later ``step`` calls continue from them.
        ``label_weights: [N]`` as in ``step``.
        Returns the metrics of the last minibatch and ``loss_full``, the loss on all data.
        """
        lw = _check_label_weights(label_weights, targets, mask)
        features_a, features_b, targets = _check_batch(features_a, features_b, targets, mask)
        epochs = self.config.refit_epochs if epochs is None else epochs
        batch_size = self.config.refit_batch_size if batch_size is None else batch_size
        if epochs < 0 or batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")
        self.model.reset_to_initial()
        self.optimizer = self._new_optimizer()
        self.replay.clear()
        self.generator.manual_seed(self.config.seed + 1)
        self.steps = 0
        n = targets.shape[0]
        weights = self.bootstrap_weights(n)
        metrics: dict[str, float] = {}
        for _ in range(epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                metrics = self._update(
                    features_a[idx],
                    features_b[idx],
                    targets[idx],
                    weights[:, idx],
                    None if lw is None else lw[idx],
                )
        self.replay.add(features_a, features_b, targets, weights, self.generator, lw)
        if n:
            with torch.no_grad():
                _, full = self.loss(features_a, features_b, targets, weights, lw)
            metrics["loss_full"] = full["loss"]
        metrics["n_labels"] = float(n)
        return metrics

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Model files (see ``ENNRewardModel.save``) plus ``trainer.pt`` (optimizer, replay
        buffer, generator state, step count), so that a loaded trainer resumes exactly."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
            "generator": self.generator.get_state(),
            "steps": self.steps,
        }
        _atomic_write(path / TRAINER_FILE, lambda p: torch.save(state, p))
        self.model.save(path)

    @classmethod
    def load(cls, path: str | Path) -> ENNTrainer:
        path = Path(path)
        trainer = cls(ENNRewardModel.load(path))
        trainer_file = path / TRAINER_FILE
        if trainer_file.exists():
            state = torch.load(trainer_file, weights_only=True)
            trainer.optimizer.load_state_dict(state["optimizer"])
            trainer.replay.load_state_dict(state["replay"])
            trainer.generator.set_state(state["generator"])
            trainer.steps = int(state["steps"])
        return trainer


def _check_label_weights(
    label_weights: Tensor | None, targets: Tensor, mask: Tensor | None
) -> Tensor | None:
    if label_weights is None:
        return None
    lw = torch.as_tensor(label_weights, dtype=torch.float32)
    if lw.shape != (torch.as_tensor(targets).shape[0],):
        raise ValueError(f"label_weights must be [{len(targets)}], got {tuple(lw.shape)}")
    if not bool(torch.isfinite(lw).all()) or bool((lw < 0).any()):
        raise ValueError("label_weights must be finite and >= 0")
    if mask is not None:
        lw = lw[torch.as_tensor(mask, dtype=torch.bool)]
    return lw


def _check_batch(
    features_a: Tensor, features_b: Tensor, targets: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    targets = torch.as_tensor(targets, dtype=torch.float32)
    if features_a.shape != features_b.shape or features_a.dim() != 2:
        raise ValueError(
            f"features_a and features_b must both be [N, D], got "
            f"{tuple(features_a.shape)} and {tuple(features_b.shape)}"
        )
    if targets.shape != (features_a.shape[0],):
        raise ValueError(f"targets must be [{features_a.shape[0]}], got {tuple(targets.shape)}")
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        features_a, features_b, targets = features_a[mask], features_b[mask], targets[mask]
    bad = ~((targets == 0.0) | (targets == 0.5) | (targets == 1.0))
    if bool(bad.any()):
        raise ValueError("targets must be 1.0 (A better), 0.0 (B better) or 0.5 (tie)")
    return features_a, features_b, targets
