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
        out.append(
            {
                "labels": points[0]["labels"],
                "win_rate": statistics.fmean(rates),
                "low": min(rates),
                "high": max(rates),
                "std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
            }
        )
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


def plot(runs: dict[str, list[list[dict]]], out_stem: Path, title: str) -> list[Path]:
    """Win rate against labels (log x), one line per algorithm, a band across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for name, curves in runs.items():
        mc = mean_curve(curves)
        x = [p["labels"] for p in mc]
        (line,) = ax.plot(x, [p["win_rate"] for p in mc], marker="o", ms=3, label=name)
        ax.fill_between(
            x, [p["low"] for p in mc], [p["high"] for p in mc], color=line.get_color(), alpha=0.15
        )
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labels")
    ax.set_ylabel("win rate vs initial policy (exact)")
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
