"""A rater model: who is reliable, who clicks the first position, who answers too fast.

Pure NumPy (no Django, no pandas): a Dawid-Skene model over the four choices of a
comparison, written on the order each rater was *shown*, so that position bias is part of
each rater's confusion matrix instead of being averaged away.

Model. Each comparison ``i`` has a hidden true answer ``z_i`` in the comparison's own terms
(0 = A better, 1 = B better, 2 = tie, 3 = both bad) with class prior ``p``. A rater ``r``
shown the pair in order ``s`` (``s = 1``: B shown first) answers in *shown* terms (0 = first
shown better, 1 = second, 2 = tie, 3 = both bad) with probability ``pi_r[perm_s(z), y]``,
where ``perm_s`` swaps 0 and 1 when ``s = 1``. A careful rater has a heavy diagonal; a
position-only clicker has column 0 full whatever the row; a random clicker has flat rows.
Gold comparisons have a known ``z`` (their posterior is clamped, never estimated).

Fit: EM with a Dirichlet prior on each row (``alpha_diag`` on the diagonal, ``alpha_off``
elsewhere; each M-step takes the posterior mean), which keeps the estimates finite for raters with few labels and breaks the
label-switching symmetry toward "raters are better than chance". A refit can start from a
previous fit's confusions and prior (``previous``): with a few new labels it converges in a
handful of iterations instead of tens (cheap incremental refits).

Derived per rater (``RaterEstimate``):
- ``accuracy``: probability that a preference (A or B) they give matches a true preference,
  averaged over both shown orders; ``reliability = max(0, 2 * accuracy - 1)`` in [0, 1]
  (0: no better than a coin, 1: always right). Intervals are Wilson intervals on the
  expected correct / wrong counts (soft counts from the posteriors).
- ``first_share``: share of their preference answers that picked the first shown response,
  against ``expected_first_share`` (what the estimated truths predict for the orders they
  were shown); ``position_bias`` is the difference, with a Wilson interval on the share.
- ``median_seconds``: median time per label.
- ``flags``: ``spam`` (reliability's upper bound below a threshold: their answers carry no
  preference signal), ``position`` (first or second share's Wilson bound beyond a
  threshold), ``too_fast`` (median time below a threshold), each with a reason in words.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml_worker.core.rater_stats import CHOICES, agreement, wilson

__all__ = [
    "CHOICES",
    "RaterEstimate",
    "RaterFit",
    "Thresholds",
    "agreement",
    "fit_raters",
    "wilson",
]

K = len(CHOICES)
_INDEX = {c: i for i, c in enumerate(CHOICES)}
_SWAP = np.array([1, 0, 2, 3])  # shown <-> canonical when B was shown first


@dataclass(frozen=True)
class Thresholds:
    """When a rater is flagged. ``min_labels``: no flag before that many labels."""

    min_labels: int = 30
    #: Spam / random: the upper bound of the reliability interval is below this.
    spam_reliability: float = 0.4
    #: Position-only: the Wilson bound of the first (or second) position share is beyond this.
    position_share: float = 0.8
    #: Too fast: median seconds per label below this.
    min_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.min_labels < 1:
            raise ValueError("min_labels must be >= 1")
        if not 0.0 < self.spam_reliability < 1.0:
            raise ValueError("spam_reliability must be in (0, 1)")
        if not 0.5 < self.position_share < 1.0:
            raise ValueError("position_share must be in (0.5, 1)")
        if self.min_seconds < 0:
            raise ValueError("min_seconds must be >= 0")


@dataclass
class RaterEstimate:
    rater: str
    n_labels: int
    n_gold: int
    gold_correct: int
    #: [4, 4] in shown order: row = true answer as shown, column = answer given.
    confusion: list[list[float]]
    accuracy: float
    accuracy_interval: tuple[float, float] | None
    reliability: float
    reliability_interval: tuple[float, float] | None
    first_share: float | None
    first_share_interval: tuple[float, float] | None
    expected_first_share: float | None
    position_bias: float | None
    median_seconds: float | None
    flags: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RaterFit:
    raters: list[str]
    items: list[Hashable]
    confusion: np.ndarray  # [R, 4, 4], shown order
    prior: np.ndarray  # [4], canonical order
    posterior: np.ndarray  # [I, 4], canonical order
    iterations: int
    converged: bool
    estimates: dict[str, RaterEstimate]

    def reliability(self) -> dict[str, float]:
        """Rater -> reliability in [0, 1] (the weight of their labels in training)."""
        return {r: e.reliability for r, e in self.estimates.items()}

    def previous(self) -> dict[str, Any]:
        """What a later refit warm-starts from (JSON-serializable)."""
        return {
            "prior": self.prior.tolist(),
            "confusion": {r: self.confusion[j].tolist() for j, r in enumerate(self.raters)},
        }


def _row_prior(alpha_diag: float, alpha_off: float) -> np.ndarray:
    a = np.full((K, K), alpha_off)
    np.fill_diagonal(a, alpha_diag)
    return a


def fit_raters(
    items: Sequence[Hashable],
    raters: Sequence[str],
    choices: Sequence[str],
    swapped: Sequence[bool],
    *,
    seconds: Sequence[float | None] | None = None,
    gold: Mapping[Hashable, str] | None = None,
    previous: Mapping[str, Any] | None = None,
    thresholds: Thresholds | None = None,
    alpha_diag: float = 2.0,
    alpha_off: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> RaterFit:
    """Fit the model on ``L`` labels given as parallel sequences.

    ``items[l]``: the comparison labeled; ``raters[l]``: who labeled it (a human or a judge);
    ``choices[l]``: "A", "B", "tie" or "both_bad" in the comparison's own terms;
    ``swapped[l]``: True when B was shown first; ``seconds[l]``: time taken (None: unknown);
    ``gold``: item -> known answer; ``previous``: ``RaterFit.previous()`` of an earlier fit.
    """
    n = len(items)
    if not (len(raters) == len(choices) == len(swapped) == n):
        raise ValueError("items, raters, choices and swapped must have the same length")
    if seconds is not None and len(seconds) != n:
        raise ValueError("seconds must have one entry per label")
    thresholds = thresholds or Thresholds()
    gold = dict(gold or {})
    for item, answer in gold.items():
        if answer not in _INDEX:
            raise ValueError(f"gold answer {answer!r} of {item!r} is not one of {CHOICES}")
    try:
        obs_canon = np.array([_INDEX[c] for c in choices], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"unknown choice {exc.args[0]!r}; expected one of {CHOICES}") from None
    item_list = list(dict.fromkeys(list(items) + list(gold)))
    item_idx = {it: i for i, it in enumerate(item_list)}
    rater_list = list(dict.fromkeys(raters))
    rater_idx = {r: j for j, r in enumerate(rater_list)}
    it = np.array([item_idx[x] for x in items], dtype=np.int64)
    rt = np.array([rater_idx[x] for x in raters], dtype=np.int64)
    sw = np.asarray(swapped, dtype=bool)
    obs = np.where(sw, _SWAP[obs_canon], obs_canon)  # answer in shown terms
    n_items, n_raters = len(item_list), len(rater_list)
    gold_idx = np.array([item_idx[x] for x in gold], dtype=np.int64)
    gold_post = np.zeros((len(gold), K))
    gold_post[np.arange(len(gold)), [_INDEX[a] for a in gold.values()]] = 1.0
    alpha = _row_prior(alpha_diag, alpha_off)

    # Start: previous confusions where known, the prior's mean elsewhere.
    conf = np.broadcast_to(alpha / alpha.sum(1, keepdims=True), (n_raters, K, K)).copy()
    prior = np.full(K, 1.0 / K)
    if previous:
        prev_conf = previous.get("confusion", {})
        for r, j in rater_idx.items():
            if r in prev_conf:
                conf[j] = np.asarray(prev_conf[r], dtype=float)
        if previous.get("prior") is not None:
            prior = np.asarray(previous["prior"], dtype=float)
    conf = np.clip(conf, 1e-9, None)
    conf /= conf.sum(2, keepdims=True)

    post = _e_step(conf, prior, it, rt, obs, sw, n_items, gold_idx, gold_post)
    converged, iterations = False, 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        conf, prior = _m_step(post, it, rt, obs, sw, n_raters, alpha)
        new = _e_step(conf, prior, it, rt, obs, sw, n_items, gold_idx, gold_post)
        delta = float(np.abs(new - post).max()) if n_items else 0.0
        post = new
        if delta < tol:
            converged = True
            break

    estimates = _estimates(
        conf, post, it, rt, obs, sw, rater_list, seconds, gold, item_list, obs_canon, thresholds
    )
    return RaterFit(
        raters=rater_list,
        items=item_list,
        confusion=conf,
        prior=prior,
        posterior=post,
        iterations=iterations,
        converged=converged,
        estimates=estimates,
    )


def _shown(post_rows: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """Canonical-order rows -> shown-order rows (swap columns A/B where B was shown first)."""
    out = post_rows.copy()
    out[sw, 0], out[sw, 1] = post_rows[sw, 1], post_rows[sw, 0]
    return out


def _e_step(
    conf: np.ndarray,
    prior: np.ndarray,
    it: np.ndarray,
    rt: np.ndarray,
    obs: np.ndarray,
    sw: np.ndarray,
    n_items: int,
    gold_idx: np.ndarray,
    gold_post: np.ndarray,
) -> np.ndarray:
    log_conf = np.log(conf)  # [R, 4, 4]
    ll_shown = log_conf[rt, :, obs]  # [L, 4]: log P(answer | true class as shown)
    ll = _shown(ll_shown, sw)  # back to canonical classes (the swap is its own inverse)
    logpost = np.tile(np.log(np.clip(prior, 1e-12, None)), (n_items, 1))
    np.add.at(logpost, it, ll)
    logpost -= logpost.max(1, keepdims=True)
    post = np.exp(logpost)
    post /= post.sum(1, keepdims=True)
    if len(gold_idx):
        post[gold_idx] = gold_post
    return np.asarray(post)


def _m_step(
    post: np.ndarray,
    it: np.ndarray,
    rt: np.ndarray,
    obs: np.ndarray,
    sw: np.ndarray,
    n_raters: int,
    alpha: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    truth_shown = _shown(post[it], sw)  # [L, 4]
    counts = np.zeros((n_raters, K, K))
    # counts[r, k, y] += P(true shown = k) for each label (r, y)
    counts_t = counts.transpose(0, 2, 1)  # a view: [R, y, k]
    np.add.at(counts_t, (rt, obs), truth_shown)
    # The Dirichlet posterior mean, not its mode: with the mode, an off-diagonal cell with no
    # counts goes to 0, a rater's answer becomes certain evidence and EM locks onto it.
    conf = counts + alpha
    conf /= conf.sum(2, keepdims=True)
    prior = post.sum(0) + 1.0
    prior /= prior.sum()
    return conf, prior


def _estimates(
    conf: np.ndarray,
    post: np.ndarray,
    it: np.ndarray,
    rt: np.ndarray,
    obs: np.ndarray,
    sw: np.ndarray,
    rater_list: list[str],
    seconds: Sequence[float | None] | None,
    gold: Mapping[Hashable, str],
    item_list: list[Hashable],
    obs_canon: np.ndarray,
    th: Thresholds,
) -> dict[str, RaterEstimate]:
    truth_shown = _shown(post[it], sw)  # [L, 4]
    secs = (
        np.array([np.nan if s is None else float(s) for s in seconds], dtype=float)
        if seconds is not None
        else np.full(len(it), np.nan)
    )
    gold_of = {i: _INDEX[gold[x]] for i, x in enumerate(item_list) if x in gold}
    out: dict[str, RaterEstimate] = {}
    for j, r in enumerate(rater_list):
        mine = rt == j
        n_labels = int(mine.sum())
        ts, ob = truth_shown[mine], obs[mine]
        pref = ob <= 1
        # Soft counts over labels whose truth is a preference and whose answer is one.
        strict = ts[pref][:, :2]
        right = float(strict[np.arange(len(strict)), ob[pref]].sum())
        wrong = float(strict.sum()) - right
        total = right + wrong
        acc = (right + 1.0) / (total + 2.0)  # shrunk toward a coin for tiny counts
        acc_ci = wilson(right, total)
        rel = max(0.0, 2 * acc - 1)
        rel_ci = (max(0.0, 2 * acc_ci[0] - 1), max(0.0, 2 * acc_ci[1] - 1)) if acc_ci else None
        n_pref = int(pref.sum())
        first = int((ob == 0).sum())
        share = first / n_pref if n_pref else None
        share_ci = wilson(first, n_pref)
        denom = ts[pref][:, 0] + ts[pref][:, 1]
        expected = (
            float(np.mean(np.where(denom > 0, ts[pref][:, 0] / np.maximum(denom, 1e-12), 0.5)))
            if n_pref
            else None
        )
        bias = None if share is None or expected is None else share - expected
        s = secs[mine]
        s = s[~np.isnan(s)]
        median = float(np.median(s)) if len(s) else None
        g_items = [i for i in it[mine].tolist() if i in gold_of]
        g_answers = obs_canon[mine][[i in gold_of for i in it[mine].tolist()]]
        g_right = int(sum(int(a == gold_of[i]) for i, a in zip(g_items, g_answers, strict=True)))
        est = RaterEstimate(
            rater=r,
            n_labels=n_labels,
            n_gold=len(g_items),
            gold_correct=g_right,
            confusion=conf[j].round(4).tolist(),
            accuracy=acc,
            accuracy_interval=acc_ci,
            reliability=rel,
            reliability_interval=rel_ci,
            first_share=share,
            first_share_interval=share_ci,
            expected_first_share=expected,
            position_bias=bias,
            median_seconds=median,
        )
        est.flags = _flags(est, th)
        out[r] = est
    return out


def _flags(e: RaterEstimate, th: Thresholds) -> list[dict[str, str]]:
    flags: list[dict[str, str]] = []
    if e.n_labels < th.min_labels:
        return flags
    if e.first_share_interval is not None:
        lo, hi = e.first_share_interval
        if lo > th.position_share or hi < 1 - th.position_share:
            side = "first" if lo > th.position_share else "second"
            flags.append(
                {
                    "code": "position",
                    "reason": (
                        f"picks the {side} shown response in {100 * (e.first_share or 0):.0f}% "
                        f"of preferences (expected about "
                        f"{100 * (e.expected_first_share or 0.5):.0f}%)"
                    ),
                }
            )
    if e.reliability_interval is not None and e.reliability_interval[1] < th.spam_reliability:
        flags.append(
            {
                "code": "spam",
                "reason": (
                    f"agrees with the estimated truth in {100 * e.accuracy:.0f}% of preferences "
                    f"(reliability at most {e.reliability_interval[1]:.2f}): "
                    "no better than random clicking"
                ),
            }
        )
    if e.median_seconds is not None and e.median_seconds < th.min_seconds:
        flags.append(
            {
                "code": "too_fast",
                "reason": (
                    f"median {e.median_seconds:.1f} s per label, under {th.min_seconds:g} s"
                ),
            }
        )
    return flags
