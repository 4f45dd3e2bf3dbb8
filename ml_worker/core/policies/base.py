"""The policy interface shared by every backend, plus small helpers.

A policy answers prompts (K sampled responses per prompt with a seed, or one greedy answer),
scores responses (sequence log-probabilities) and learns from (prompt, response, signal)
triples: one REINFORCE step that raises log pi(response | prompt) in proportion to its signal.
A version is saved as a small artifact directory and restored with the backend's `load`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Policy(Protocol):
    #: Tokens of each response of the last `sample` call, flattened (empty: not counted).
    last_token_counts: list[int]

    def sample(self, prompts: list[str], k: int, *, seed: int) -> list[list[str]]:
        """K responses per prompt, `[len(prompts)][k]`, deterministic given `seed`."""
        ...

    def greedy(self, prompts: list[str]) -> list[str]:
        """The most likely answer per prompt (argmax decoding)."""
        ...

    def log_probs(self, prompts: list[str], responses: list[str]) -> Tensor:
        """log pi(response_i | prompt_i) summed over the response: `[N]`."""
        ...

    def update(self, prompts: list[str], responses: list[str], signals: Tensor) -> dict[str, float]:
        """One policy step on N triples (`signals: [N]`); returns metrics (loss, kl, grad_norm)."""
        ...

    def save(self, path: Path) -> None:
        """Write this version to the directory `path` (created; made complete before return)."""
        ...


def check_triples(prompts: list[str], responses: list[str], signals: Tensor | None = None) -> None:
    """Raise ValueError unless prompts, responses (and signals `[N]`) line up."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if signals is not None:
        if signals.dim() != 1 or signals.shape[0] != len(prompts):
            raise ValueError(f"signals must have shape [{len(prompts)}], got {list(signals.shape)}")
        if not torch.isfinite(signals).all():
            raise ValueError("signals must be finite")


@torch.no_grad()
def ema_update_(anchor: Sequence[Tensor], current: Sequence[Tensor], decay: float) -> None:
    """In place: anchor <- decay * anchor + (1 - decay) * current, tensor by tensor."""
    for a, c in zip(anchor, current, strict=True):
        a.mul_(decay).add_(c.detach().to(a.dtype), alpha=1.0 - decay)


def clip_grad_norm(params: Sequence[Tensor], max_norm: float | None) -> float:
    """Clip the total gradient norm to `max_norm` (None: no clipping); return the norm before."""
    with_grads = [p for p in params if p.grad is not None]
    if not with_grads:
        return 0.0
    if max_norm is None:
        norms = [p.grad.norm() for p in with_grads if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(norms)))
    return float(torch.nn.utils.clip_grad_norm_(with_grads, max_norm))


@contextlib.contextmanager
def write_dir_atomically(path: Path) -> Iterator[Path]:
    """Yield a fresh sibling folder to write into; on success it replaces ``path`` by a rename,
    so the directory appears complete or not at all. On failure it is removed."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
