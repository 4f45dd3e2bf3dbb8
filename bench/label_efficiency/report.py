"""Summaries of the label-efficiency results: labels-to-match table, the paper's fit, the plot."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch


def labels_to_reach(curve: list[dict], target: float) -> float | None:
    """First label count at which `curve` ([{labels, win_rate}] by labels) reaches `target`,
    interpolated linearly in log(labels) between grid points; None if it never does."""
    prev = None
    for point in curve:
        n, w = point["labels"], point["win_rate"]
        if w >= target:
            if prev is None or prev[1] >= target:
                return float(n)
            (n0, w0) = prev
            frac = (target - w0) / (w - w0)
            return math.exp(math.log(n0) + frac * (math.log(n) - math.log(n0)))
        prev = (n, w)
    return None


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    out = []
    for points in zip(*curves, strict=True):
        rates = [p["win_rate"] for p in points]
        row = {
            "labels": points[0]["labels"],
            "win_rate": statistics.fmean(rates),
            "low": min(rates),
            "high": max(rates),
            "std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        }
        accs = [p["rm_top_accuracy"] for p in points if "rm_top_accuracy" in p]
        if accs:
            row |= {
                "rm_top_accuracy": statistics.fmean(accs),
                "rm_top_accuracy_low": min(accs),
                "rm_top_accuracy_high": max(accs),
            }
        out.append(row)
    return out


def match_table(runs: dict[str, list[list[dict]]], reference: str = "offline") -> dict:
    """Labels each algorithm needs to reach `reference`'s best mean win rate, per seed, and
    the ratio reference_labels / algorithm_labels per seed (> 1: fewer labels than offline)."""
    ref_mean = mean_curve(runs[reference])
    best = max(p["win_rate"] for p in ref_mean)
    ref_needed = [labels_to_reach(c, best) for c in runs[reference]]
    table = {"target_win_rate": best, "reference": reference, "algorithms": {}}
    for name, curves in runs.items():
        needed = [labels_to_reach(c, best) for c in curves]
        ratios = [
            r / n
            for r, n in zip(ref_needed, needed, strict=True)
            if r is not None and n is not None
        ]
        reached = [n for n in needed if n is not None]
        table["algorithms"][name] = {
            "labels_per_seed": needed,
            "median_labels": statistics.median(reached) if reached else None,
            "seeds_reaching": len(reached),
            "ratio_per_seed": ratios,
            "ratio_mean": statistics.fmean(ratios) if ratios else None,
            "ratio_min": min(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None,
        }
    return table


#: The fixed win-rate targets (PROTOCOL.md): labels to reach each, for every algorithm.
TARGETS = (0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 12345


def _needed(curves: list[list[dict]], target: float) -> float:
    """Labels the mean curve of `curves` needs to reach `target` (inf if it never does)."""
    n = labels_to_reach(mean_curve(curves), target)
    return math.inf if n is None else n


def bootstrap_ratio(
    numerator: list[list[dict]],
    denominator: list[list[dict]],
    target: float,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict:
    """Labels `numerator` needs to reach `target` over labels `denominator` needs, each from
    the mean curve over its seeds, with a 95% percentile bootstrap interval: the seeds of each
    algorithm are resampled with replacement, independently. A mean curve that never reaches the
    target needs "more than the largest budget": inf labels, so a ratio can be inf (or 0), and
    the interval then is open on that side. None where neither reaches the target."""
    estimate = _ratio(_needed(numerator, target), _needed(denominator, target))
    if estimate is None:
        return {"ratio": None, "low": None, "high": None}
    gen = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(resamples):
        a = torch.randint(len(numerator), (len(numerator),), generator=gen).tolist()
        b = torch.randint(len(denominator), (len(denominator),), generator=gen).tolist()
        r = _ratio(
            _needed([numerator[i] for i in a], target), _needed([denominator[i] for i in b], target)
        )
        ratios.append(math.nan if r is None else r)
    values = torch.tensor(ratios, dtype=torch.float64)
    values = values[~values.isnan()]
    low, high = torch.quantile(
        values.clamp(max=1e12), torch.tensor([0.025, 0.975], dtype=torch.float64)
    )
    return {
        "ratio": estimate,
        "low": math.inf if float(low) >= 1e12 else float(low),
        "high": math.inf if float(high) >= 1e12 else float(high),
    }


def _ratio(num: float, den: float) -> float | None:
    if math.isinf(num) and math.isinf(den):
        return None
    return num / den


def bootstrap_difference(
    a: list[list[dict]],
    b: list[list[dict]],
    key: str = "win_rate",
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> list[dict]:
    """Per budget, mean(a) - mean(b) of `key` over seeds with a 95% percentile bootstrap
    interval (seeds resampled with replacement, independently per algorithm)."""
    va = torch.tensor([[p[key] for p in c] for c in a], dtype=torch.float64)  # [Sa, budgets]
    vb = torch.tensor([[p[key] for p in c] for c in b], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    ia = torch.randint(len(a), (resamples, len(a)), generator=gen)
    ib = torch.randint(len(b), (resamples, len(b)), generator=gen)
    diffs = va[ia].mean(1) - vb[ib].mean(1)  # [R, budgets]
    low, high = torch.quantile(diffs, torch.tensor([0.025, 0.975], dtype=torch.float64), dim=0)
    return [
        {
            "labels": p["labels"],
            "difference": float(va[:, j].mean() - vb[:, j].mean()),
            "low": float(low[j]),
            "high": float(high[j]),
        }
        for j, p in enumerate(a[0])
    ]


def verdict(low: float | None, high: float | None) -> str:
    """ "better" / "worse" / "not distinguishable" from a ratio's interval (ratio > 1: the
    denominator needs fewer labels)."""
    if low is None or high is None:
        return "neither reaches the target"
    if low > 1:
        return "better"
    if high < 1:
        return "worse"
    return "equal (not distinguishable)"


#: The ratios of labels needed that the tables report (numerator / denominator).
RATIOS = (("offline", "infomax"), ("online", "infomax"), ("offline", "online"))


def target_table(runs: dict[str, list[list[dict]]], targets: tuple[float, ...] = TARGETS) -> dict:
    """Labels each algorithm's mean curve needs for each fixed target (None: not reached),
    seeds reaching it, and the ratios offline / infomax and online / infomax with bootstrap
    intervals."""
    table: dict = {"targets": list(targets), "labels": {}, "seeds_reaching": {}, "ratios": {}}
    for name, curves in runs.items():
        table["labels"][name] = [
            None if math.isinf(n := _needed(curves, t)) else n for t in targets
        ]
        table["seeds_reaching"][name] = [
            sum(labels_to_reach(c, t) is not None for c in curves) for t in targets
        ]
    first = min(p["labels"] for p in next(iter(runs.values()))[0])
    for num, den in RATIOS:
        if num in runs and den in runs:
            row = []
            for j, t in enumerate(targets):
                r = bootstrap_ratio(runs[num], runs[den], t)
                # Reached at the first budget: the labels needed are at most that, not equal.
                r["censored"] = any(table["labels"][n][j] == first for n in (num, den))
                row.append(r)
            table["ratios"][f"{num}/{den}"] = row
    return table


def fit_power_law(curve: list[dict]) -> dict:
    """Fit of the paper's w(n) = 1 - 0.5 (n / a) ** (-b) to a mean curve.

    Linear least squares in the transformed space where the law is a line:
    log(2 (1 - w)) = -b log n + b log a. `b <= 0` means the curve did not rise with labels
    (then `a` is meaningless and reported as None).
    """
    x = torch.tensor([math.log(p["labels"]) for p in curve], dtype=torch.float64)
    y = torch.tensor([math.log(2 * (1 - p["win_rate"])) for p in curve], dtype=torch.float64)
    design = torch.stack([x, torch.ones_like(x)], dim=1)
    slope, intercept = torch.linalg.lstsq(design, y[:, None]).solution[:, 0].tolist()
    b = -slope
    a = math.exp(intercept / b) if b > 0 else None
    pred = 1 - 0.5 * torch.exp(design @ torch.tensor([slope, intercept], dtype=torch.float64))
    w = torch.tensor([p["win_rate"] for p in curve], dtype=torch.float64)
    return {"a": a, "b": b, "rmse": float(((pred - w) ** 2).mean().sqrt())}


def plot(
    runs: dict[str, list[list[dict]]],
    out_stem: Path,
    title: str,
    key: str = "win_rate",
    ylabel: str = "win rate vs initial policy (exact)",
) -> list[Path]:
    """`key` (win rate by default) against labels (log x), one line per algorithm, a band
    from the lowest to the highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for name, curves in runs.items():
        mc = mean_curve(curves)
        x = [p["labels"] for p in mc]
        low, high = ("low", "high") if key == "win_rate" else (f"{key}_low", f"{key}_high")
        (line,) = ax.plot(x, [p[key] for p in mc], marker="o", ms=3, label=name)
        ax.fill_between(
            x, [p[low] for p in mc], [p[high] for p in mc], color=line.get_color(), alpha=0.15
        )
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labels")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = out_stem.with_suffix(f".{ext}")
        fig.savefig(path, metadata={"Date": None} if ext == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths
