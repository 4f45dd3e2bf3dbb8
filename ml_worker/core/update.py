"""Policy-update signals: the paper's REINFORCE signal with the affirmative nudge.

For a response Y compared with another response Y' to the same prompt, the signal is

    s(Y; Y') = p(Y > Y') - 1/2 + epsilon,    p(Y > Y') = sigmoid(r(Y) - r(Y')),

with r the reward model's point estimate. For each prompt the update uses the pair the
annotator labeled and its reverse, plus the reward model's best-vs-worst pair among the K
responses and its reverse. Without epsilon every pair contributes +d and -d, so the update only
reshuffles mass between sampled responses; online training then tends to collapse ("tank").
The affirmative nudge epsilon > 0 makes the step raise the likelihood of the sampled responses
on average.

Why the nudge is added to the signal and not to the reward: p(Y > Y') depends only on
r(Y) - r(Y'), so a constant added to every reward cancels exactly, as it would under any
group-mean or leave-one-out baseline (r_i - mean_j r_j). The nudge must therefore be added
after that centering, to the signal itself; then the mean signal over the returned entries is
exactly epsilon larger than without it (the `p - 1/2` parts of a pair and its reverse sum to 0).
"""

from __future__ import annotations

import torch
from torch import Tensor


def pair_signals(point_rewards: Tensor, a: Tensor, b: Tensor, nudge: float) -> Tensor:
    """Signals of Y=a against Y'=b: `sigmoid(r_a - r_b) - 1/2 + nudge`.

    point_rewards: [B, K]; a, b: LongTensor[B] response indices. Returns [B].
    """
    rows = torch.arange(point_rewards.shape[0], device=point_rewards.device)
    diff = point_rewards[rows, a] - point_rewards[rows, b]
    return torch.sigmoid(diff) - 0.5 + nudge


def best_worst(point_rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Per prompt, the best and the worst response by point reward: (LongTensor[B], LongTensor[B]).

    point_rewards: [B, K] with K >= 2. The worst is chosen among the responses other than the
    best, so the pair is always distinct, even when all rewards tie.
    """
    if point_rewards.shape[1] < 2:
        raise ValueError("best-vs-worst needs at least 2 responses per prompt")
    best = point_rewards.argmax(dim=1)
    masked = point_rewards.clone()
    masked[torch.arange(point_rewards.shape[0]), best] = float("inf")
    worst = masked.argmin(dim=1)
    return best, worst


def reinforce_signals(
    point_rewards: Tensor,
    labeled_pairs: Tensor | None,
    nudge: float,
    include_best_worst: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """REINFORCE triples for one round.

    point_rewards: [B, K] the reward model's point estimates of the K responses per prompt.
    labeled_pairs: LongTensor[B, 2] the labeled pair per prompt (indices into K), or None for
        the paper's second sub-step on unlabeled prompts (reward model only, best-vs-worst).
    nudge: the affirmative nudge epsilon, added to every signal after centering.
    include_best_worst: also add the reward model's best-vs-worst pair and its reverse.

    Returns (prompt_idx: LongTensor[N], response_idx: LongTensor[N], signal: [N]), per prompt
    in the order: labeled a vs b, b vs a, best vs worst, worst vs best (so N = 2B or 4B).
    """
    if point_rewards.dim() != 2:
        raise ValueError(f"point_rewards must be [B, K], got {list(point_rewards.shape)}")
    point_rewards = point_rewards.detach().float()
    B, K = point_rewards.shape
    pairs: list[tuple[Tensor, Tensor]] = []
    if labeled_pairs is not None:
        if labeled_pairs.shape != (B, 2):
            raise ValueError(f"labeled_pairs must be [{B}, 2], got {list(labeled_pairs.shape)}")
        lp = labeled_pairs.long().to(point_rewards.device)
        if (lp < 0).any() or (lp >= K).any():
            raise ValueError(f"labeled_pairs must index responses in [0, {K})")
        pairs.append((lp[:, 0], lp[:, 1]))
    if include_best_worst:
        pairs.append(best_worst(point_rewards))
    if not pairs:
        raise ValueError("no pairs: pass labeled_pairs or include_best_worst=True")

    prompt_cols, response_cols, signal_cols = [], [], []
    rows = torch.arange(B, device=point_rewards.device)
    for a, b in pairs:
        for y, y_other in ((a, b), (b, a)):
            prompt_cols.append(rows)
            response_cols.append(y)
            signal_cols.append(pair_signals(point_rewards, y, y_other, nudge))
    # Stack as [B, n_entries] then flatten so that each prompt's entries are contiguous.
    prompt_idx = torch.stack(prompt_cols, dim=1).reshape(-1)
    response_idx = torch.stack(response_cols, dim=1).reshape(-1)
    signal = torch.stack(signal_cols, dim=1).reshape(-1)
    return prompt_idx, response_idx, signal


def unlabeled_signals(point_rewards: Tensor, nudge: float) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's second sub-step on prompts without labels: best-vs-worst and its reverse.

    point_rewards: [B, K]. Returns (prompt_idx [2B], response_idx [2B], signal [2B]).
    """
    return reinforce_signals(point_rewards, None, nudge, include_best_worst=True)
