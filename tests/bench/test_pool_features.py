"""The shipped SmolLM2 view of the pool (`bench/data/pool_features.npz`): its checksum, that it
belongs to the committed pool, and a sample of its rows recomputed with the featurizer that
made them (features at fp16, likelihoods at fp32)."""

import shutil

import numpy as np
import pytest
import torch

from bench.label_efficiency import features as pool_features
from bench.label_efficiency.env import DEFAULT_POOL, read_pool

#: (prompt, response) positions recomputed: a few prompts of both splits, a few responses each.
SAMPLE_PROMPTS = (0, 9, 100, 319)
SAMPLE_RESPONSES = (0, 17, 47)


@pytest.fixture(scope="module")
def pool():
    return read_pool(DEFAULT_POOL)


def test_the_pack_matches_its_checksum_and_the_committed_pool(pool, tmp_path):
    prompts = [r["prompt"] for r in pool]
    texts = [[x["text"] for x in r["responses"]] for r in pool]
    digest = pool_features.pool_digest(prompts, texts)
    assert pool_features.read_pack_digest() == digest
    feats, loglik = pool_features.read_pack(digest)  # checks the sha256
    assert feats.shape == (len(pool), len(texts[0]), 576)
    assert loglik.shape == (len(pool), len(texts[0]), len(pool_features.LOGLIK_COLUMNS))
    assert torch.isfinite(feats).all() and torch.isfinite(loglik).all()
    assert (loglik[..., 0] <= 0).all() and (loglik[..., 1] >= 1).all()

    # A changed byte is refused, naming the checksum.
    bad = tmp_path / "pool_features.npz"
    shutil.copy(pool_features.PACK, bad)
    shutil.copy(pool_features.sum_path(pool_features.PACK), pool_features.sum_path(bad))
    with open(bad, "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="sha256"):
        pool_features.read_pack(digest, bad)


def test_a_sample_of_rows_recomputed_matches_the_pack(pool, tmp_path):
    with np.load(pool_features.PACK) as data:
        packed_f = torch.from_numpy(data["features"].astype(np.float32))
        packed_l = torch.from_numpy(data["loglik"])
    featurizer = pool_features.load_featurizer()
    for p in SAMPLE_PROMPTS:
        row = pool[p]
        texts = [row["responses"][c]["text"] for c in SAMPLE_RESPONSES]
        got = featurizer.embed([row["prompt"]] * len(texts), texts)
        f, lik = got[:, :576], got[:, 576:]
        want_f = packed_f[p, list(SAMPLE_RESPONSES)]
        want_l = packed_l[p, list(SAMPLE_RESPONSES)]
        cos = torch.nn.functional.cosine_similarity(f, want_f, dim=-1)
        assert (cos > 0.9999).all(), (p, cos)
        assert torch.allclose(f, want_f, rtol=2e-3, atol=1e-2), (p, (f - want_f).abs().max())
        assert torch.equal(lik[:, 1], want_l[:, 1])  # token counts exactly
        assert torch.allclose(lik, want_l, rtol=1e-3, atol=1e-2), (p, lik - want_l)
