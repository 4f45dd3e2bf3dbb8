"""How much of the oracle's reward variance the learner's features can explain (PROTOCOL.md).

Computed before any algorithm runs: a ridge regression of the oracle's rewards r[p, c] on the
learner's features phi[p, c], with its regularization chosen on a fixed 3/4 - 1/4 split of the
training prompts, refit on all training prompts and scored on the evaluation prompts. Two R^2:

- ``r2``: of the rewards themselves;
- ``r2_within``: within prompts, with rewards and predictions centered per prompt (what decides
  which candidate of a prompt is better, and so what a reward model must get right).

A low value bounds what any reward model on these features can learn about this oracle on
prompts it never saw, whatever pairs it is shown.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Ridge regularization candidates (on features standardized to unit variance per column).
ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
SPLIT_SEED = 1000


def _fit(x: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    mean, std = x.mean(0), x.std(0).clamp(min=1e-8)
    z = (x - mean) / std
    gram = z.T @ z + alpha * torch.eye(z.shape[1], dtype=z.dtype)
    w = torch.linalg.solve(gram, z.T @ (y - y.mean()))
    return w, mean, std, y.mean()


def _predict(model: tuple[Tensor, Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    w, mean, std, bias = model
    return ((x - mean) / std) @ w + bias


def _r2(y: Tensor, pred: Tensor) -> float:
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def _r2_within(y: Tensor, pred: Tensor) -> float:
    """y, pred: [N, C]; R^2 after centering each prompt's row."""
    yc = y - y.mean(-1, keepdim=True)
    pc = pred - pred.mean(-1, keepdim=True)
    return float(1 - ((yc - pc) ** 2).sum() / (yc**2).sum())


def explained_variance(
    features: Tensor, rewards: Tensor, train_idx: Tensor, eval_idx: Tensor
) -> dict:
    """features [P, C, D], rewards [P, C] -> {alpha, r2, r2_within, train_r2, train_r2_within}."""
    x = features.double()
    y = rewards.double()
    order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = max(1, len(train_idx) // 4)
    fit, val = train_idx[order[n_val:]], train_idx[order[:n_val]]

    def flat(idx: Tensor) -> tuple[Tensor, Tensor]:
        return x[idx].reshape(-1, x.shape[-1]), y[idx].reshape(-1)

    def score(alpha: float) -> float:
        model = _fit(*flat(fit), alpha)
        return _r2_within(y[val], _predict(model, x[val]))

    alpha = max(ALPHAS, key=score)
    model = _fit(*flat(train_idx), alpha)
    pred_eval = _predict(model, x[eval_idx])
    pred_train = _predict(model, x[train_idx])
    return {
        "alpha": alpha,
        "r2": _r2(y[eval_idx].reshape(-1), pred_eval.reshape(-1)),
        "r2_within": _r2_within(y[eval_idx], pred_eval),
        "train_r2": _r2(y[train_idx].reshape(-1), pred_train.reshape(-1)),
        "train_r2_within": _r2_within(y[train_idx], pred_train),
        "within_share_of_variance": float(
            ((y - y.mean(-1, keepdim=True)) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        ),
    }
