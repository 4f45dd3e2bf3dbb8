"""The fixed environment of the label-efficiency benchmark: pool, learner features, oracle.

Everything an algorithm may see or be scored by is computed here once, before any algorithm
runs, and never depends on an algorithm's choices:

- the candidate pool (`bench/data/pool.jsonl.gz`, built by `bench/build_pool.py`): prompts
  with their split (train / eval) and C responses each;
- the learner's features `phi[p, c]` of each (prompt, response): the platform's own reward
  backbone (SmolLM2-135M-Instruct's last-token hidden state, `LMFeaturizer`), and SmolLM2's
  likelihood of each response, shipped in `bench/data/pool_features.npz` (`features.py`);
- the oracle's hidden reward `r[p, c]` (`OracleJudge` with its default weights and the
  all-MiniLM-L6-v2 encoder, with the prompt's reference answer, or without it in the
  reference-free environment) and its Bradley-Terry temperature, cached under `var/`. The
  oracle is deliberately not exactly representable by the learner's features (see
  `ml_worker/core/judges/oracle.py`);
- the environment (`ENVIRONMENTS`, PROTOCOL.md): which oracle, which initial policy (uniform or
  SmolLM2's length-normalized likelihood), whether the policy has per-prompt logit offsets, and
  which prompts the win rate is scored on.

`PoolEnv.synthetic` builds a small random environment of the same shape for tests.
"""

from __future__ import annotations

import gzip
import json
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
    base_logits: Tensor | None = None  # [P, C] the initial policy's logits (None: uniform)
    per_prompt: bool = False  # the policy learns per-prompt logit offsets
    eval_split: str = "eval"  # the prompts the win rate is scored on

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
        if self.base_logits is not None and self.base_logits.shape != (P, C):
            raise ValueError("base_logits must be [P, C]")

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
        cls,
        *,
        prompts: int = 12,
        candidates: int = 8,
        dim: int = 16,
        seed: int = 0,
        in_distribution: bool = False,
    ) -> PoolEnv:
        """A small random environment: rewards partly linear in the features, plus noise.
        ``in_distribution``: scored on the training prompts, per-prompt policy offsets and a
        random non-uniform initial policy (as the in-distribution environments)."""
        g = torch.Generator().manual_seed(seed)
        feats = torch.randn(prompts, candidates, dim, generator=g)
        w = torch.randn(dim, generator=g)
        rewards = feats @ w / dim**0.5 + 0.5 * torch.randn(prompts, candidates, generator=g)
        texts = [[f"p{p}-c{c}" for c in range(candidates)] for p in range(prompts)]
        n_eval = max(1, prompts // 4)
        base = torch.randn(prompts, candidates, generator=g) if in_distribution else None
        return cls(
            prompts=[f"prompt {p}" for p in range(prompts)],
            splits=["eval" if p < n_eval else "train" for p in range(prompts)],
            pool=texts,
            features=feats,
            rewards=rewards,
            base_logits=base,
            per_prompt=in_distribution,
            eval_split="train" if in_distribution else "eval",
            description={
                "kind": "synthetic",
                "in_distribution": in_distribution,
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


def read_references(path: Path = DEFAULT_PROMPTS) -> dict[str, str | None]:
    """Prompt id -> the reference answer the oracle may see (`bench/data/prompts.jsonl`)."""
    with open(path, encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()]
    return {item["id"]: item.get("reference") for item in items}


@dataclass(frozen=True)
class Environment:
    """One of the benchmark's environments (PROTOCOL.md): what the oracle sees, where the
    policy starts, its capacity, and where it is scored."""

    name: str
    oracle: str  # "reference": the hidden reference answer counts; "reference_free": it does not
    initial: str  # "uniform" | "smollm2": SmolLM2's length-normalized likelihood (initial_logits)
    per_prompt: bool  # the policy's per-prompt logit offset (PoolPolicy per_prompt)
    eval_split: str  # "eval": held-out prompts; "train": held-out samples of the training prompts
    summary: str


ENVIRONMENTS: dict[str, Environment] = {
    e.name: e
    for e in (
        Environment(
            "in_distribution",
            "reference",
            "smollm2",
            True,
            "train",
            "training prompts, per-prompt policy offsets, SmolLM2-likelihood start",
        ),
        Environment(
            "held_out",
            "reference",
            "uniform",
            False,
            "eval",
            "held-out prompts, shared linear policy, uniform start (issue 8's setting)",
        ),
        Environment(
            "reference_free",
            "reference_free",
            "smollm2",
            True,
            "train",
            "as in_distribution, with an oracle that judges without the reference answer",
        ),
    )
}


def initial_logits(loglik: Tensor, generated_tokens: Tensor, max_new_tokens: Tensor) -> Tensor:
    """The in-distribution start: SmolLM2's mean log-probability per generated token of each
    candidate (the end-of-turn token counts when the response stopped before the cap), used as
    the policy's logits. A length-normalized likelihood: longer answers are not penalized for
    their length, and low-temperature samples start more likely than high-temperature ones."""
    stopped = (generated_tokens < max_new_tokens).float()
    total = loglik[..., 0] + stopped * loglik[..., 2]
    return total / (loglik[..., 1] + stopped).clamp(min=1.0)


def load_env(
    pool_path: Path = DEFAULT_POOL,
    *,
    environment: str = "held_out",
    prompts_path: Path = DEFAULT_PROMPTS,
    cache_dir: Path = CACHE_DIR,
    feature_dim: int | None = 128,
) -> PoolEnv:
    """One of `ENVIRONMENTS` from the pool file: the learner's features and SmolLM2's
    likelihoods from the shipped `bench/data/pool_features.npz` (computed when missing), the
    oracle's rewards cached under `cache_dir`."""
    from . import features as pool_features

    spec = ENVIRONMENTS[environment]
    rows = read_pool(pool_path)
    if not rows:
        raise ValueError(f"{pool_path}: no prompts")
    references = read_references(prompts_path)
    prompts = [r["prompt"] for r in rows]
    pool = [[resp["text"] for resp in r["responses"]] for r in rows]
    sizes = {len(c) for c in pool}
    if len(sizes) != 1:
        raise ValueError(f"{pool_path}: prompts have different numbers of responses {sizes}")
    digest = pool_features.pool_digest(prompts, pool)
    P, C = len(prompts), sizes.pop()
    with_reference = spec.oracle == "reference"
    rewards = oracle_rewards(rows, references, with_reference=with_reference, cache_dir=cache_dir)

    if not pool_features.PACK.exists() or pool_features.read_pack_digest() != digest:
        flat_p = [p for p, cands in zip(prompts, pool, strict=True) for _ in cands]
        flat_r = [t for cands in pool for t in cands]
        computed = pool_features.compute_rows(flat_p, flat_r, step=C)
        pool_features.write_pack(computed, digest, P, C)
    features, loglik = pool_features.read_pack(digest)
    raw_dim = int(features.shape[-1])
    if feature_dim is not None and feature_dim < raw_dim:
        features = principal_components(features.reshape(P * C, -1), feature_dim).reshape(P, C, -1)
    base_logits = None
    if spec.initial == "smollm2":
        generated = torch.tensor([[resp["tokens"] for resp in r["responses"]] for r in rows])
        cap = torch.tensor([[r["max_new_tokens"]] for r in rows])
        base_logits = initial_logits(loglik, generated, cap)
    return PoolEnv(
        prompts=prompts,
        splits=[r["split"] for r in rows],
        pool=pool,
        features=features.float(),
        rewards=rewards.float(),
        references=[references.get(r["prompt_id"]) for r in rows],
        base_logits=base_logits,
        per_prompt=spec.per_prompt,
        eval_split=spec.eval_split,
        description={
            "environment": spec.name,
            "summary": spec.summary,
            "pool": str(
                pool_path.relative_to(ROOT) if pool_path.is_relative_to(ROOT) else pool_path
            ),
            "pool_sha256_16": digest,
            "prompts": P,
            "train_prompts": sum(r["split"] == "train" for r in rows),
            "eval_prompts": sum(r["split"] == "eval" for r in rows),
            "scored_on": spec.eval_split,
            "candidates_per_prompt": C,
            "featurizer": "smollm2 last-token hidden state (bench/data/pool_features.npz, fp16)",
            "featurizer_dim": raw_dim,
            "feature_dim": int(features.shape[-1]),
            "initial_policy": spec.initial,
            "per_prompt_offsets": spec.per_prompt,
            "oracle": "OracleJudge default weights, all-MiniLM-L6-v2, "
            + ("with references" if with_reference else "without references"),
            "oracle_temperature": ORACLE_TEMPERATURE,
        },
    )


def oracle_rewards(
    rows: list[dict],
    references: dict[str, str | None],
    *,
    with_reference: bool,
    cache_dir: Path = CACHE_DIR,
) -> Tensor:
    """The oracle's rewards [P, C] of the pool's responses, cached under `cache_dir` by pool
    digest (``-noref``: the reference-free oracle, which never sees the reference answers)."""
    from . import features as pool_features

    prompts = [r["prompt"] for r in rows]
    pool = [[resp["text"] for resp in r["responses"]] for r in rows]
    digest = pool_features.pool_digest(prompts, pool)
    rewards_file = cache_dir / (
        f"oracle-{digest}-T{ORACLE_TEMPERATURE:g}" + ("" if with_reference else "-noref") + ".pt"
    )
    if rewards_file.exists():
        return torch.load(rewards_file)
    from ml_worker.core.judges.oracle import OracleJudge

    oracle = OracleJudge(temperature=ORACLE_TEMPERATURE)
    flat_p = [r["prompt"] for r in rows for _ in r["responses"]]
    flat_r = [resp["text"] for r in rows for resp in r["responses"]]
    refs = [
        references.get(r["prompt_id"]) if with_reference else None
        for r in rows
        for _ in r["responses"]
    ]
    print(
        f"oracle rewards for {len(flat_r)} responses (all-MiniLM-L6-v2; one batch, about "
        f"{len(flat_r) / 4000:.0f} min on 2 CPU cores, cached afterwards) ...",
        flush=True,
    )
    rewards = oracle.reward(flat_p, flat_r, refs).reshape(len(rows), -1)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = rewards_file.with_suffix(".tmp")
    torch.save(rewards, tmp)
    tmp.replace(rewards_file)
    return rewards


def principal_components(x: Tensor, dim: int) -> Tensor:
    """x [N, D] centered and projected on its top `dim` principal directions (no labels used).

    The reward model's particles each hold a first layer over the features, so their cost
    grows with D; on this CPU 576-wide features made a round about 4x slower than 128-wide.
    """
    x = x.double()
    centered = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    return (centered @ vh[:dim].T).float()
