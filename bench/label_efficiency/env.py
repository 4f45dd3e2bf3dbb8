"""The fixed environment of the label-efficiency benchmark: pool, learner features, oracle.

Everything an algorithm may see or be scored by is computed here once, before any algorithm
runs, and never depends on an algorithm's choices:

- the candidate pool (`bench/data/pool.jsonl.gz`, built by `bench/build_pool.py`): prompts
  with their split (train / eval) and C responses each;
- the learner's features `phi[p, c]` of each (prompt, response): by default the platform's
  own reward backbone (SmolLM2-135M-Instruct's last-token hidden state, `LMFeaturizer`),
  cached on disk under `var/` with a progress bar, so only the first run pays for them;
- the oracle's hidden reward `r[p, c]` (`OracleJudge` with its default weights and the
  all-MiniLM-L6-v2 encoder, with the prompt's reference answer) and its Bradley-Terry
  temperature. The oracle is deliberately not representable by the learner's features
  (see `ml_worker/core/judges/oracle.py`).

`PoolEnv.synthetic` builds a small random environment of the same shape for tests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ml_worker.core.acquisition import distinct_responses

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POOL = ROOT / "bench/data/pool.jsonl.gz"
DEFAULT_PROMPTS = ROOT / "bench/data/prompts.jsonl"
CACHE_DIR = ROOT / "var/bench/label_efficiency"

#: The oracle's Bradley-Terry temperature: fixed before any comparison, never tuned.
ORACLE_TEMPERATURE = 1.0


@dataclass
class PoolEnv:
    prompts: list[str]  # [P]
    splits: list[str]  # [P] "train" | "eval"
    pool: list[list[str]]  # [P][C]
    features: Tensor  # [P, C, D] learner features
    rewards: Tensor  # [P, C] oracle rewards
    temperature: float = ORACLE_TEMPERATURE
    description: dict | None = None
    references: list[str | None] | None = None  # [P] the oracle's reference answers

    def __post_init__(self) -> None:
        P, C, _ = self.features.shape
        if self.rewards.shape != (P, C):
            raise ValueError("features and rewards disagree on [P, C]")
        if len(self.prompts) != P or len(self.splits) != P or len(self.pool) != P:
            raise ValueError("prompts, splits and pool must have P entries")
        if any(len(c) != C for c in self.pool):
            raise ValueError(f"every prompt needs exactly {C} candidates")
        if self.references is not None and len(self.references) != P:
            raise ValueError("references must have P entries")

    @property
    def num_candidates(self) -> int:
        return self.features.shape[1]

    def split(self, name: str) -> Tensor:
        return torch.tensor([i for i, s in enumerate(self.splits) if s == name], dtype=torch.long)

    def distinct(self, prompt_idx: Tensor, cand_idx: Tensor) -> Tensor:
        """bool[B, K]: the platform's `distinct_responses` rule on a sampled group's texts."""
        return distinct_responses(
            [
                [self.pool[p][c] for c in row]
                for p, row in zip(prompt_idx.tolist(), cand_idx.tolist(), strict=True)
            ]
        )

    @classmethod
    def synthetic(
        cls, *, prompts: int = 12, candidates: int = 8, dim: int = 16, seed: int = 0
    ) -> PoolEnv:
        """A small random environment: rewards partly linear in the features, plus noise."""
        g = torch.Generator().manual_seed(seed)
        feats = torch.randn(prompts, candidates, dim, generator=g)
        w = torch.randn(dim, generator=g)
        rewards = feats @ w / dim**0.5 + 0.5 * torch.randn(prompts, candidates, generator=g)
        texts = [[f"p{p}-c{c}" for c in range(candidates)] for p in range(prompts)]
        n_eval = max(1, prompts // 4)
        return cls(
            prompts=[f"prompt {p}" for p in range(prompts)],
            splits=["eval" if p < n_eval else "train" for p in range(prompts)],
            pool=texts,
            features=feats,
            rewards=rewards,
            description={
                "kind": "synthetic",
                "seed": seed,
                "prompts": prompts,
                "train_prompts": prompts - n_eval,
                "eval_prompts": n_eval,
                "candidates_per_prompt": candidates,
            },
        )


def read_pool(path: Path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_env(
    pool_path: Path = DEFAULT_POOL,
    *,
    prompts_path: Path = DEFAULT_PROMPTS,
    cache_dir: Path = CACHE_DIR,
    featurizer: str = "smollm2",
    feature_dim: int | None = 128,
) -> PoolEnv:
    """The benchmark's environment from the pool file, features and rewards cached on disk."""
    rows = read_pool(pool_path)
    if not rows:
        raise ValueError(f"{pool_path}: no prompts")
    references = {}
    with open(prompts_path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                item = json.loads(line)
                references[item["id"]] = item.get("reference")
    prompts = [r["prompt"] for r in rows]
    pool = [[resp["text"] for resp in r["responses"]] for r in rows]
    sizes = {len(c) for c in pool}
    if len(sizes) != 1:
        raise ValueError(f"{pool_path}: prompts have different numbers of responses {sizes}")
    digest = hashlib.sha256(json.dumps([prompts, pool]).encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    flat_p = [p for p, cands in zip(prompts, pool, strict=True) for _ in cands]
    flat_r = [t for cands in pool for t in cands]
    P, C = len(prompts), sizes.pop()

    rewards_file = cache_dir / f"oracle-{digest}-T{ORACLE_TEMPERATURE:g}.pt"
    if rewards_file.exists():
        rewards = torch.load(rewards_file)
    else:
        from ml_worker.core.judges.oracle import OracleJudge

        oracle = OracleJudge(temperature=ORACLE_TEMPERATURE)
        refs = [references.get(r["prompt_id"]) for r in rows for _ in r["responses"]]
        print(
            f"oracle rewards for {len(flat_r)} responses (all-MiniLM-L6-v2; one batch, about "
            f"{len(flat_r) / 4000:.0f} min on 2 CPU cores, cached afterwards) ...",
            flush=True,
        )
        rewards = oracle.reward(flat_p, flat_r, refs).reshape(P, C)
        torch.save(rewards, rewards_file)

    features_file = cache_dir / f"features-{featurizer}-{digest}.pt"
    if features_file.exists():
        features = torch.load(features_file)
    else:
        features = compute_features(flat_p, flat_r, featurizer, cache_dir, step=C).reshape(P, C, -1)
        torch.save(features, features_file)

    raw_dim = int(features.shape[-1])
    if feature_dim is not None and feature_dim < raw_dim:
        features = principal_components(features.reshape(P * C, -1), feature_dim).reshape(P, C, -1)
    return PoolEnv(
        prompts=prompts,
        splits=[r["split"] for r in rows],
        pool=pool,
        features=features.float(),
        rewards=rewards.float(),
        references=[references.get(r["prompt_id"]) for r in rows],
        description={
            "pool": str(
                pool_path.relative_to(ROOT) if pool_path.is_relative_to(ROOT) else pool_path
            ),
            "pool_sha256_16": digest,
            "prompts": P,
            "train_prompts": sum(r["split"] == "train" for r in rows),
            "eval_prompts": sum(r["split"] == "eval" for r in rows),
            "candidates_per_prompt": C,
            "featurizer": featurizer,
            "featurizer_dim": raw_dim,
            "feature_dim": int(features.shape[-1]),
            "oracle": "OracleJudge default weights, all-MiniLM-L6-v2, with references",
            "oracle_temperature": ORACLE_TEMPERATURE,
        },
    )


def principal_components(x: Tensor, dim: int) -> Tensor:
    """x [N, D] centered and projected on its top `dim` principal directions (no labels used).

    The reward model's particles each hold a first layer over the features, so their cost
    grows with D; on this CPU 576-wide features made a round about 4x slower than 128-wide.
    """
    x = x.double()
    centered = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    return (centered @ vh[:dim].T).float()


def compute_features(
    prompts: list[str],
    responses: list[str],
    featurizer: str,
    cache_dir: Path,
    *,
    step: int,
    shard: tuple[int, int] = (0, 1),
) -> Tensor:
    """Learner features of each (prompt, response), with a progress bar; per-row disk cache
    (`CachedFeaturizer`), so an interrupted run resumes where it stopped. Rows go to the
    featurizer in chunks of `step` (the pool's responses per prompt: one chunk, one prompt,
    whose tokens the featurizer then runs once for all its responses).

    With ``shard=(k, n)`` only every n-th chunk, from the k-th, is computed (and cached; the
    partial result is returned): n processes fill the cache in parallel, then `load_env`
    finds every row there (`python -m bench.label_efficiency.env --shard k/n`)."""
    from tqdm import tqdm

    from ml_worker.core.features import CachedFeaturizer, LMFeaturizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if featurizer != "smollm2":
        raise ValueError(f"unknown featurizer {featurizer!r} (smollm2)")
    from ml_worker.core.policies.lm import DEFAULT_CACHE_DIR, load_smollm2

    model, tokenizer = load_smollm2(ROOT / DEFAULT_CACHE_DIR)
    cached = CachedFeaturizer(LMFeaturizer(model, tokenizer), cache_dir / "feature-rows")
    out = []
    k, n = shard
    starts = list(range(0, len(prompts), step))[k::n]
    for start in tqdm(starts, desc="learner features", unit="prompt"):
        out.append(cached.embed(prompts[start : start + step], responses[start : start + step]))
    return torch.cat(out)


def main(argv: list[str] | None = None) -> None:
    """Fill the feature cache of the pool, as one of N parallel shards."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m bench.label_efficiency.env",
        description="Compute and cache the learner features of the pool (one shard of them).",
    )
    ap.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    ap.add_argument("--shard", default="0/1", help="K/N: every N-th prompt, from the K-th")
    args = ap.parse_args(argv)
    k, n = (int(x) for x in args.shard.split("/"))
    if not 0 <= k < n:
        ap.error(f"--shard {args.shard}: K must be in 0..N-1")
    rows = read_pool(args.pool)
    flat_p = [r["prompt"] for r in rows for _ in r["responses"]]
    flat_r = [resp["text"] for r in rows for resp in r["responses"]]
    step = len(rows[0]["responses"])
    compute_features(flat_p, flat_r, "smollm2", CACHE_DIR, step=step, shard=(k, n))
    print(f"shard {k}/{n} of {len(flat_r)} rows cached under {CACHE_DIR / 'feature-rows'}")


if __name__ == "__main__":
    main()
