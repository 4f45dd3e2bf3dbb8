"""PoolPolicy: a softmax over a fixed pool of real candidate responses per prompt.

For prompt p with candidates c = 0..C-1 and frozen features phi[p, c] in R^D,

    logits[p, c] = base_logits[p, c] + phi[p, c] . theta,     pi(c | p) = softmax_c(logits[p]).

theta in R^D is shared across prompts, so what is learned on one prompt generalizes to others
through the features. With ``per_prompt=True`` the policy also learns a per-prompt logit offset
``offset[p, c]`` (a table, added to the logits): the capacity to prefer any candidate of a prompt
it trains on, whatever the features say (the benchmark's in-distribution setting); copies of one
text share their offset. Initial policy: theta = 0, so pi = softmax(base_logits); with no
`base_logits` that is the uniform distribution over each prompt's pool. Pass the initial LM's
sequence log-probabilities of the candidates as `base_logits` to start from (the pool-restricted)
initial LM instead. Pools may have different sizes: pad `features` to the largest C and the
missing candidates get probability 0.

Because everything is a softmax over C items, sampling is exact (no decoding), expectations
are exact sums, and the EMA KL term is the exact KL between two categorical distributions.
The update is the same REINFORCE step as `LMPolicy`:

    loss = -mean_i(signal_i * log pi(c_i | p_i)) + kl_coef * mean_p KL(pi(.|p) || pi_ema(.|p)),

with the anchor pi_ema given by theta_ema <- ema_decay * theta_ema + (1 - ema_decay) * theta
after each step, and gradient clipping on theta.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ml_worker.core.policies.base import (
    check_triples,
    clip_grad_norm,
    ema_update_,
    write_dir_atomically,
)

_FORMAT = "pool-policy/1"


class PoolPolicy:
    def __init__(
        self,
        pool: list[list[str]],
        features: Tensor,
        prompts: list[str],
        *,
        lr: float = 0.05,
        kl_coef: float = 0.1,
        ema_decay: float = 0.99,
        grad_clip: float | None = 1.0,
        base_logits: Tensor | None = None,
        optimizer: str = "adam",
        save_pool: bool = True,
        per_prompt: bool = False,
    ) -> None:
        """pool: [P][C_p] candidate texts; features: [P, C, D] (C = max C_p); prompts: [P].

        save_pool: whether `save` writes the texts and features too by default (False for the
        versions of a platform campaign, which load them from the campaign's pool package).
        """
        if features.dim() != 3:
            raise ValueError(f"features must be [P, C, D], got {list(features.shape)}")
        P, C, D = features.shape
        if len(pool) != P or len(prompts) != P:
            raise ValueError(f"{len(prompts)} prompts, {len(pool)} pools, features for {P}")
        if any(len(c) == 0 or len(c) > C for c in pool):
            raise ValueError(f"every pool needs between 1 and {C} candidates")
        if len(set(prompts)) != P:
            raise ValueError("prompts must be distinct")
        self.prompts = list(prompts)
        self.pool = [list(c) for c in pool]
        self.features = features.detach().float().contiguous()
        self.mask = torch.zeros(P, C, dtype=torch.bool)
        for p, cands in enumerate(pool):
            self.mask[p, : len(cands)] = True
        base = torch.zeros(P, C) if base_logits is None else base_logits.detach().float().clone()
        if base.shape != (P, C):
            raise ValueError(f"base_logits must be [{P}, {C}], got {list(base.shape)}")
        self.base_logits = base.masked_fill(~self.mask, 0.0)
        self.theta = torch.zeros(D, requires_grad=True)
        self.theta_ema = torch.zeros(D)
        self.per_prompt = per_prompt
        # Each candidate's first copy of its text: the offsets belong to texts, so copies of a
        # text share one (an update keyed by text then moves every copy, as sampling any copy
        # would have).
        self._canon = torch.arange(C).repeat(P, 1)
        for p, cands in enumerate(pool):
            first: dict[str, int] = {}
            for c, text in enumerate(cands):
                self._canon[p, c] = first.setdefault(text, c)
        # [P, C] learned logit offsets, or [0] (none): a leaf either way, so saving is uniform.
        self.offset = torch.zeros((P, C) if per_prompt else (0,), requires_grad=per_prompt)
        self.offset_ema = torch.zeros_like(self.offset)
        self.lr, self.kl_coef, self.ema_decay, self.grad_clip = lr, kl_coef, ema_decay, grad_clip
        self.optimizer_name = optimizer
        self.optimizer = _make_optimizer(optimizer, self._params(), lr)
        self.steps = 0
        self.save_pool = save_pool
        self.last_token_counts: list[int] = []  # the Policy protocol's; a pool decodes nothing
        self._prompt_index = {p: i for i, p in enumerate(self.prompts)}
        self._cand_index = [{c: j for j, c in enumerate(cands)} for cands in self.pool]

    # -- index-based core ----------------------------------------------------------------------

    def _params(self) -> list[Tensor]:
        return [self.theta, self.offset] if self.per_prompt else [self.theta]

    def logits(self, prompt_idx: Tensor, *, anchor: bool = False) -> Tensor:
        """prompt_idx: LongTensor[B] -> logits [B, C] (-inf on padded candidates); with
        ``anchor=True``, the EMA anchor's logits."""
        theta, offset = (self.theta_ema, self.offset_ema) if anchor else (self.theta, self.offset)
        logits = self.base_logits[prompt_idx] + self.features[prompt_idx] @ theta
        if self.per_prompt:
            logits = logits + offset[prompt_idx].gather(1, self._canon[prompt_idx])
        return logits.masked_fill(~self.mask[prompt_idx], float("-inf"))

    def probs(self, prompt_idx: Tensor) -> Tensor:
        """prompt_idx: LongTensor[B] -> pi(. | p) [B, C]."""
        with torch.no_grad():
            return torch.softmax(self.logits(prompt_idx), dim=-1)

    def sample_indices(self, prompt_idx: Tensor, k: int, generator: torch.Generator) -> Tensor:
        """Exact samples with replacement: prompt_idx LongTensor[B] -> LongTensor[B, K]."""
        return torch.multinomial(self.probs(prompt_idx), k, replacement=True, generator=generator)

    def greedy_indices(self, prompt_idx: Tensor) -> Tensor:
        """prompt_idx: LongTensor[B] -> argmax candidate LongTensor[B]."""
        return self.probs(prompt_idx).argmax(dim=-1)

    def log_probs_indices(self, prompt_idx: Tensor, cand_idx: Tensor) -> Tensor:
        """prompt_idx, cand_idx: LongTensor[N] -> log pi(c | p) [N]."""
        with torch.no_grad():
            return self._log_probs(prompt_idx, cand_idx)

    def _log_probs(self, prompt_idx: Tensor, cand_idx: Tensor) -> Tensor:
        logp = torch.log_softmax(self.logits(prompt_idx), dim=-1)
        return logp.gather(1, cand_idx[:, None]).squeeze(1)

    def expected(self, prompt_idx: Tensor, values: Tensor) -> Tensor:
        """Exact E_{c ~ pi(.|p)}[values[b, c]]: prompt_idx [B], values [B, C] -> [B].

        Values at padded candidates are ignored (probability 0), even if they are NaN.
        """
        probs = self.probs(prompt_idx)
        values = values.to(probs.dtype).masked_fill(~self.mask[prompt_idx], 0.0)
        return (probs * values).sum(dim=-1)

    def kl_to_anchor(self, prompt_idx: Tensor) -> Tensor:
        """Exact KL(pi(.|p) || pi_ema(.|p)) per prompt: [B]."""
        with torch.no_grad():
            return self._kl(prompt_idx)

    def _kl(self, prompt_idx: Tensor) -> Tensor:
        mask = self.mask[prompt_idx]
        logp = torch.log_softmax(self.logits(prompt_idx), dim=-1)
        logq = torch.log_softmax(self.logits(prompt_idx, anchor=True), dim=-1)
        terms = logp.exp() * (logp - logq)
        return terms.masked_fill(~mask, 0.0).sum(dim=-1)

    def update_indices(
        self, prompt_idx: Tensor, cand_idx: Tensor, signals: Tensor
    ) -> dict[str, float]:
        """One REINFORCE step on N (prompt, candidate, signal) triples, all [N]."""
        if not (prompt_idx.shape == cand_idx.shape == signals.shape) or signals.dim() != 1:
            raise ValueError("prompt_idx, cand_idx and signals must all be [N]")
        if not self.mask[prompt_idx, cand_idx].all():
            raise ValueError("a candidate index points outside its prompt's pool")
        signals = signals.detach().float()
        self.optimizer.zero_grad(set_to_none=True)
        logp = self._log_probs(prompt_idx, cand_idx)
        pg_loss = -(signals * logp).mean()
        kl = self._kl(torch.unique(prompt_idx)).mean()
        loss = pg_loss + self.kl_coef * kl
        loss.backward()
        grad_norm = clip_grad_norm(self._params(), self.grad_clip)
        self.optimizer.step()
        ema_update_([self.theta_ema, self.offset_ema], [self.theta, self.offset], self.ema_decay)
        self.steps += 1
        return {
            "loss": float(loss.detach()),
            "pg_loss": float(pg_loss.detach()),
            "kl": float(kl.detach()),
            "grad_norm": grad_norm,
            "mean_signal": float(signals.mean()),
            "n": float(signals.shape[0]),
        }

    # -- text interface (the Policy protocol) ---------------------------------------------------

    def prompt_indices(self, prompts: list[str]) -> Tensor:
        try:
            return torch.tensor([self._prompt_index[p] for p in prompts], dtype=torch.long)
        except KeyError as e:
            raise ValueError(f"prompt not in this pool: {e.args[0][:80]!r}") from None

    def candidate_indices(self, prompts: list[str], responses: list[str]) -> tuple[Tensor, Tensor]:
        check_triples(prompts, responses)
        pidx = self.prompt_indices(prompts)
        try:
            cidx = [self._cand_index[p][r] for p, r in zip(pidx.tolist(), responses, strict=True)]
        except KeyError as e:
            raise ValueError(f"response not in its prompt's pool: {e.args[0][:80]!r}") from None
        return pidx, torch.tensor(cidx, dtype=torch.long)

    def sample(self, prompts: list[str], k: int, *, seed: int) -> list[list[str]]:
        g = torch.Generator().manual_seed(seed)
        pidx = self.prompt_indices(prompts)
        idx = self.sample_indices(pidx, k, g)
        return [
            [self.pool[p][c] for c in row]
            for p, row in zip(pidx.tolist(), idx.tolist(), strict=True)
        ]

    def greedy(self, prompts: list[str]) -> list[str]:
        pidx = self.prompt_indices(prompts)
        best = self.greedy_indices(pidx)
        return [self.pool[p][c] for p, c in zip(pidx.tolist(), best.tolist(), strict=True)]

    def log_probs(self, prompts: list[str], responses: list[str]) -> Tensor:
        return self.log_probs_indices(*self.candidate_indices(prompts, responses))

    def update(self, prompts: list[str], responses: list[str], signals: Tensor) -> dict[str, float]:
        check_triples(prompts, responses, signals)
        pidx, cidx = self.candidate_indices(prompts, responses)
        return self.update_indices(pidx, cidx, signals)

    # -- artifacts -----------------------------------------------------------------------------

    def save(self, path: Path, *, include_pool: bool | None = None) -> None:
        """Write theta, its EMA anchor, the optimizer state and the config to directory `path`.

        include_pool defaults to the policy's `save_pool`. With include_pool=False the (large,
        frozen) texts and features are left out; load such an artifact with
        `PoolPolicy.load(path, pool_from=<a policy over the same pool>)`.
        The directory appears complete or not at all (written aside, then renamed).
        """
        path = Path(path)
        include_pool = self.save_pool if include_pool is None else include_pool
        with write_dir_atomically(path) as tmp:
            tensors = {"theta": self.theta.detach(), "theta_ema": self.theta_ema}
            if self.per_prompt:
                tensors |= {"offset": self.offset.detach(), "offset_ema": self.offset_ema}
            state = self.optimizer.state_dict()
            for index, prefix in enumerate(("optim.", "optim_offset.")):
                for key, value in state["state"].get(index, {}).items():
                    if isinstance(value, Tensor):
                        tensors[f"{prefix}{key}"] = value.reshape(-1) if value.dim() == 0 else value
            if include_pool:
                tensors |= {"features": self.features, "base_logits": self.base_logits}
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "policy.safetensors")
            config = {
                "format": _FORMAT,
                "lr": self.lr,
                "kl_coef": self.kl_coef,
                "ema_decay": self.ema_decay,
                "grad_clip": self.grad_clip,
                "optimizer": self.optimizer_name,
                "steps": self.steps,
                "include_pool": include_pool,
                "dim": int(self.theta.shape[0]),
                "per_prompt": self.per_prompt,
            }
            (tmp / "policy.json").write_text(json.dumps(config, indent=2))
            if include_pool:
                (tmp / "pool.json").write_text(
                    json.dumps({"prompts": self.prompts, "pool": self.pool})
                )

    @classmethod
    def load(cls, path: Path, *, pool_from: PoolPolicy | None = None) -> PoolPolicy:
        path = Path(path)
        config = json.loads((path / "policy.json").read_text())
        if config.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a {_FORMAT} artifact")
        tensors = load_file(path / "policy.safetensors")
        if config["include_pool"]:
            data = json.loads((path / "pool.json").read_text())
            prompts, pool = data["prompts"], data["pool"]
            features, base_logits = tensors["features"], tensors["base_logits"]
        elif pool_from is not None:
            prompts, pool = pool_from.prompts, pool_from.pool
            features, base_logits = pool_from.features, pool_from.base_logits
        else:
            raise ValueError(f"{path} holds no pool: pass pool_from=")
        policy = cls(
            pool,
            features,
            prompts,
            lr=config["lr"],
            kl_coef=config["kl_coef"],
            ema_decay=config["ema_decay"],
            grad_clip=config["grad_clip"],
            base_logits=base_logits,
            optimizer=config["optimizer"],
            save_pool=config["include_pool"],
            per_prompt=config.get("per_prompt", False),
        )
        with torch.no_grad():
            policy.theta.copy_(tensors["theta"])
            policy.theta_ema.copy_(tensors["theta_ema"])
            if policy.per_prompt:
                policy.offset.copy_(tensors["offset"])
                policy.offset_ema.copy_(tensors["offset_ema"])
        optim_states = {}
        for index, prefix in enumerate(("optim.", "optim_offset.")):
            found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if found:
                if "step" in found:
                    found["step"] = found["step"].reshape(())
                optim_states[index] = found
        if optim_states:
            state = policy.optimizer.state_dict()
            state["state"] = optim_states
            policy.optimizer.load_state_dict(state)
        policy.steps = config["steps"]
        return policy


class PoolFeaturizer:
    """The reward model's features of a pool's (prompt, response) pairs: the pool's own
    frozen features, looked up by text (the `Featurizer` protocol of `features.py`)."""

    def __init__(self, pool: PoolPolicy, featurizer_id: str) -> None:
        self.pool = pool
        self._id = featurizer_id

    @property
    def dim(self) -> int:
        return int(self.pool.features.shape[-1])

    @property
    def featurizer_id(self) -> str:
        return self._id

    def embed(self, prompts: list[str], responses: list[str]) -> Tensor:
        pidx, cidx = self.pool.candidate_indices(prompts, responses)
        return self.pool.features[pidx, cidx]


def _make_optimizer(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r} (adam or sgd)")
