"""The learner's SmolLM2 view of the pool: features and the LM's own likelihood of each response.

One prefill of SmolLM2-135M-Instruct per (prompt, response) gives both:

- the learner's features: the last token's final hidden state, exactly the platform's reward
  backbone (`LMFeaturizer`);
- SmolLM2's log-likelihood of the response given the prompt (the chat-formatted conversation):
  the sum of the log-probabilities of the response's tokens, their number, and the
  log-probability of the end-of-turn token after them. The in-distribution environment's
  initial policy is built from these (`env.initial_logits`).

The pass costs about 40 minutes of both cores of the 2-core development machine for the
15,360 responses, so its result is shipped with the repository
(`bench/data/pool_features.npz`: features at fp16, likelihoods at fp32, with a sha256 in
`bench/data/pool_features.sha256`); `tests/bench/test_pool_features.py` recomputes a sample of
rows and compares. To rebuild it (a new pool), fill the row cache with N shards, then pack:

    for k in 0 1; do OMP_NUM_THREADS=1 nohup .venv/bin/python -m bench.label_efficiency.features \\
        --shard $k/2 > var/bench/features.$k.log 2>&1 & done
    .venv/bin/python -m bench.label_efficiency.features --pack
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ml_worker.core.features import CachedFeaturizer, LMFeaturizer, Prefix

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "bench/data/pool_features.npz"
ROW_CACHE = ROOT / "var/bench/label_efficiency/feature-rows"

#: Columns after the features in a likelihood row.
LOGLIK_COLUMNS = ("response_logprob", "response_tokens", "end_logprob")


class LikelihoodFeaturizer(LMFeaturizer):
    """`LMFeaturizer` rows with three more columns (`LOGLIK_COLUMNS`): SmolLM2's log-probability
    of the response's tokens (summed), their number, and the end-of-turn token's log-probability.

    The response is the span between the last ``<|im_start|>assistant`` header and the last
    ``<|im_end|>`` of the formatted conversation. Right padding only (real tokens first)."""

    def __init__(self, model, tokenizer, **kwargs) -> None:
        kwargs.setdefault("padding_side", "right")
        if kwargs["padding_side"] != "right":
            raise ValueError("LikelihoodFeaturizer reads rows right-padded")
        super().__init__(model, tokenizer, **kwargs)
        self._base_dim = self._dim
        self._dim = self._base_dim + len(LOGLIK_COLUMNS)
        self._id = f"{self._id}:loglik1"
        self._start = int(tokenizer.convert_tokens_to_ids("<|im_start|>"))
        self._end = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))
        self._newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
        self._head = model.get_output_embeddings()

    def _read_rows(
        self, hidden: Tensor, last: Tensor, rows: list[list[int]], prefix: Prefix | None
    ) -> Tensor:
        features = super()._read_rows(hidden, last, rows, prefix)
        out = torch.empty(len(rows), len(LOGLIK_COLUMNS))
        for i, row in enumerate(rows):
            ids = (prefix.ids if prefix is not None else []) + row
            states = hidden[i, : len(row)]
            if prefix is not None:
                states = torch.cat([prefix.hidden, states])
            out[i] = self._likelihood(ids, states)
        return torch.cat([features, out], dim=1)

    def _likelihood(self, ids: list[int], states: Tensor) -> Tensor:
        starts = [j for j, t in enumerate(ids) if t == self._start]
        ends = [j for j, t in enumerate(ids) if t == self._end]
        if not starts or not ends or ends[-1] < starts[-1]:
            raise ValueError("no assistant turn found in the formatted conversation")
        # The response starts after the header's newline: <|im_start|> "ass" "istant" "\n".
        first = next(j for j in range(starts[-1], len(ids)) if ids[j] == self._newline) + 1
        end = ends[-1]  # the end-of-turn token after the response
        targets = torch.tensor(ids[first : end + 1], device=states.device)
        logits = self._head(states[first - 1 : end]).float()  # position t predicts t + 1
        logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1).cpu()
        return torch.tensor([float(logp[:-1].sum()), float(end - first), float(logp[-1])])


def load_featurizer(likelihood: bool = True) -> LMFeaturizer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml_worker.core.policies.lm import DEFAULT_CACHE_DIR, load_smollm2

    model, tokenizer = load_smollm2(ROOT / DEFAULT_CACHE_DIR)
    return (LikelihoodFeaturizer if likelihood else LMFeaturizer)(model, tokenizer)


def compute_rows(
    prompts: list[str],
    responses: list[str],
    *,
    step: int,
    shard: tuple[int, int] = (0, 1),
    cache_dir: Path = ROW_CACHE,
) -> Tensor:
    """Likelihood rows ``[N, D + 3]`` of each (prompt, response), with a progress bar and a
    per-row disk cache (an interrupted run resumes). Rows go to the featurizer in chunks of
    `step` (one prompt's responses: the prompt's tokens then run once for all of them). With
    ``shard=(k, n)`` only every n-th chunk from the k-th is computed, so n processes can fill
    the cache in parallel; the partial result is returned."""
    from tqdm import tqdm

    cached = CachedFeaturizer(load_featurizer(), cache_dir)
    out = []
    k, n = shard
    starts = list(range(0, len(prompts), step))[k::n]
    for start in tqdm(starts, desc="SmolLM2 features + likelihoods", unit="prompt"):
        out.append(cached.embed(prompts[start : start + step], responses[start : start + step]))
    return torch.cat(out)


def pool_digest(prompts: list[str], pool: list[list[str]]) -> str:
    """The pool's identity (first 16 hex of sha256 over its prompts and texts)."""
    import json

    return hashlib.sha256(json.dumps([prompts, pool]).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_pack(rows: Tensor, digest: str, P: int, C: int, path: Path = PACK) -> None:
    """Write the shipped file: features fp16 [P, C, D], likelihoods fp32 [P, C, 3]."""
    rows = rows.reshape(P, C, -1)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        features=rows[..., : -len(LOGLIK_COLUMNS)].numpy().astype(np.float16),
        loglik=rows[..., -len(LOGLIK_COLUMNS) :].numpy().astype(np.float32),
        pool_digest=np.array(digest),
    )
    os.replace(tmp, path)
    sum_path(path).write_text(f"{file_sha256(path)}  {path.name}\n")


def sum_path(path: Path) -> Path:
    """The checksum file beside a pack (`pool_features.sha256` beside `pool_features.npz`)."""
    return path.with_suffix(".sha256")


def read_pack_digest(path: Path = PACK) -> str:
    """The pool digest the shipped file was computed for."""
    with np.load(path) as data:
        return str(data["pool_digest"])


def read_pack(digest: str, path: Path = PACK) -> tuple[Tensor, Tensor]:
    """(features float32 [P, C, D], loglik [P, C, 3]) from the shipped file, after checking its
    sha256 and that it was computed for this pool."""
    expected = sum_path(path).read_text().split()[0]
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(f"{path}: sha256 {actual} differs from {sum_path(path).name} ({expected})")
    with np.load(path) as data:
        if str(data["pool_digest"]) != digest:
            raise ValueError(
                f"{path} holds features of pool {data['pool_digest']}, not of this pool ({digest})"
            )
        return torch.from_numpy(data["features"].astype(np.float32)), torch.from_numpy(
            data["loglik"]
        )


def main(argv: list[str] | None = None) -> None:
    from .env import DEFAULT_POOL, read_pool

    ap = argparse.ArgumentParser(
        prog="python -m bench.label_efficiency.features",
        description="Compute (one shard of) the pool's SmolLM2 features and likelihoods, or "
        "pack the cached rows into bench/data/pool_features.npz.",
    )
    ap.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    ap.add_argument("--shard", default="0/1", help="K/N: every N-th prompt, from the K-th")
    ap.add_argument("--pack", action="store_true", help="write the shipped file (all rows)")
    args = ap.parse_args(argv)
    try:
        k, n = (int(x) for x in args.shard.split("/"))
    except ValueError:
        ap.error(f"--shard {args.shard!r}: expected K/N, e.g. 0/2")
    if not 0 <= k < n:
        ap.error(f"--shard {args.shard}: K must be in 0..N-1")
    rows = read_pool(args.pool)
    flat_p = [r["prompt"] for r in rows for _ in r["responses"]]
    flat_r = [resp["text"] for r in rows for resp in r["responses"]]
    step = len(rows[0]["responses"])
    shard = (0, 1) if args.pack else (k, n)  # packing reads (or computes) every row
    out = compute_rows(flat_p, flat_r, step=step, shard=shard)
    if args.pack:
        prompts = [r["prompt"] for r in rows]
        pool = [[resp["text"] for resp in r["responses"]] for r in rows]
        write_pack(out, pool_digest(prompts, pool), len(rows), step)
        print(f"wrote {PACK} ({PACK.stat().st_size / 1e6:.1f} MB) and {sum_path(PACK).name}")
    else:
        print(f"shard {k}/{n} of {len(flat_r)} rows cached under {ROW_CACHE}")


if __name__ == "__main__":
    main()
