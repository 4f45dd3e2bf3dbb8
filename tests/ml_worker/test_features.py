from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from ml_worker.core.features import CachedFeaturizer, Featurizer, LMFeaturizer, cache_key
from ml_worker.core.policies.tiny import tiny_causal_lm


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: threads only add OpenMP spin-waits, which on a loaded 2-core
    machine make each op 10x slower. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PROMPTS = ["hi", "What is 2 + 2? Explain at length, please.", "x", "Name a colour."]
RESPONSES = ["hello there", "Four, because of arithmetic.", "", "Blue"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_causal_lm(seed=0)


class CountingFeaturizer:
    """Wraps a featurizer and records every row it is asked to compute."""

    def __init__(self, inner: Featurizer) -> None:
        self.inner = inner
        self.calls: list[list[tuple[str, str]]] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def featurizer_id(self) -> str:
        return self.inner.featurizer_id

    def embed(self, prompts: list[str], responses: list[str]) -> Tensor:
        self.calls.append(list(zip(prompts, responses, strict=True)))
        return self.inner.embed(prompts, responses)

    @property
    def rows(self) -> int:
        return sum(len(c) for c in self.calls)


# ---- LMFeaturizer ----------------------------------------------------------------------------


def test_it_reads_the_last_token_hidden_state_of_the_chat(tiny) -> None:
    model, tokenizer = tiny
    feat = LMFeaturizer(model, tokenizer)
    assert isinstance(feat, Featurizer) and feat.dim == model.config.hidden_size
    text = feat.format(PROMPTS[1], RESPONSES[1])
    assert PROMPTS[1] in text and RESPONSES[1] in text
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[-1]
    expected = hidden[0, -1]
    got = feat.embed([PROMPTS[1]], [RESPONSES[1]])
    assert got.shape == (1, feat.dim) and got.dtype == torch.float32
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padding_does_not_change_a_rows_features(tiny, padding_side: str) -> None:
    model, tokenizer = tiny
    batched = LMFeaturizer(model, tokenizer, batch_size=len(PROMPTS), padding_side=padding_side)
    single = LMFeaturizer(model, tokenizer, batch_size=1)
    together = batched.embed(PROMPTS, RESPONSES)
    alone = torch.cat([single.embed([p], [r]) for p, r in zip(PROMPTS, RESPONSES, strict=True)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert batched.forward_calls == 1 and single.forward_calls == len(PROMPTS)
    # Rows really differ: the features are not a constant.
    assert (together[0] - together[1]).abs().max() > 1e-3


def test_features_keep_the_input_order_across_batches(tiny) -> None:
    model, tokenizer = tiny
    feat = LMFeaturizer(model, tokenizer, batch_size=3, share_prompts=False)
    prompts, responses = PROMPTS * 2, RESPONSES[::-1] * 2
    out = feat.embed(prompts, responses)
    reversed_out = feat.embed(prompts[::-1], responses[::-1])
    torch.testing.assert_close(out, reversed_out.flip(0), atol=1e-5, rtol=1e-4)
    assert feat.forward_calls == 6


def test_rows_of_one_prompt_run_its_tokens_once_with_the_same_features(tiny) -> None:
    """Sharing a prompt's tokens changes the work, not the features: 7 responses to one prompt
    and one each to two others, mixed, against the same rows computed one by one."""
    model, tokenizer = tiny
    long_prompt = "Explain why the sky is blue, in three sentences, to a child of ten."
    prompts = [long_prompt] * 4 + ["hi"] + [long_prompt] * 3 + ["yo"]
    responses = ["Light scatters.", "", "Because of air.", "Blue light bounces more off air"]
    responses += ["hello", "Rayleigh", "It just is", "Sunlight has all colours.", "hey"]
    shared = LMFeaturizer(model, tokenizer, batch_size=4)
    plain = LMFeaturizer(model, tokenizer, batch_size=4, share_prompts=False)
    alone = LMFeaturizer(model, tokenizer, batch_size=1, share_prompts=False)
    got = shared.embed(prompts, responses)
    expected = torch.cat([alone.embed([p], [r]) for p, r in zip(prompts, responses, strict=True)])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(plain.embed(prompts, responses), expected, atol=1e-5, rtol=1e-4)

    ids = shared.tokenize(prompts, responses)
    long_rows = [row for row, p in zip(ids, prompts, strict=True) if p == long_prompt]
    prefix = next(k for k in range(len(long_rows[0])) if len({r[k] for r in long_rows}) > 1)
    assert prefix >= shared.min_shared_tokens
    # The long prompt's prefix ran once, then only the responses' own tokens, in 2 batches
    # of 4 and 3 padded to their longest; the two rows alone with their prompts ran as one
    # plain batch.
    suffixes = sorted(len(r) - prefix for r in long_rows)
    short = [row for row, p in zip(ids, prompts, strict=True) if p != long_prompt]
    assert shared.tokens_run == (
        prefix + 4 * suffixes[3] + 3 * suffixes[6] + 2 * max(len(r) for r in short)
    )
    assert shared.forward_calls == 1 + 2 + 1
    assert shared.tokens_run < plain.tokens_run


def test_it_truncates_from_the_left_so_the_response_end_is_kept(tiny) -> None:
    model, tokenizer = tiny
    feat = LMFeaturizer(model, tokenizer, max_length=24)
    long_a, long_b = "a" * 100 + " question", "b" * 120 + " question"
    rows = feat.embed([long_a, long_b], ["same answer", "same answer"])
    torch.testing.assert_close(rows[0], rows[1])
    assert all(len(r) == 24 for r in feat.tokenize([long_a], ["same answer"]))


def test_it_handles_an_empty_batch_and_mismatched_lengths(tiny) -> None:
    feat = LMFeaturizer(*tiny)
    assert feat.embed([], []).shape == (0, feat.dim)
    with pytest.raises(ValueError, match="prompts"):
        feat.embed(["a", "b"], ["c"])


def test_it_leaves_the_model_in_its_training_mode(tiny) -> None:
    model, tokenizer = tiny
    model.train()
    try:
        LMFeaturizer(model, tokenizer).embed(PROMPTS[:1], RESPONSES[:1])
        assert model.training
    finally:
        model.eval()


def test_the_id_changes_with_the_weights(tiny) -> None:
    model, tokenizer = tiny
    other, _ = tiny_causal_lm(seed=1)
    assert LMFeaturizer(model, tokenizer).featurizer_id == LMFeaturizer(*tiny).featurizer_id
    assert (
        LMFeaturizer(model, tokenizer).featurizer_id != LMFeaturizer(other, tokenizer).featurizer_id
    )
    assert LMFeaturizer(model, tokenizer, featurizer_id="x").featurizer_id == "x"


# ---- CachedFeaturizer ------------------------------------------------------------------------


def test_a_second_call_is_served_from_the_cache(tiny, tmp_path: Path) -> None:
    lm = LMFeaturizer(*tiny, batch_size=2)
    counting = CountingFeaturizer(lm)
    cached = CachedFeaturizer(counting, tmp_path)
    first = cached.embed(PROMPTS, RESPONSES)
    forwards = lm.forward_calls
    assert counting.rows == len(PROMPTS) and forwards == 2
    second = cached.embed(PROMPTS, RESPONSES)
    assert lm.forward_calls == forwards and counting.rows == len(PROMPTS)  # no model forward
    assert torch.equal(first, second)
    torch.testing.assert_close(first, lm.embed(PROMPTS, RESPONSES))
    # A fresh cache object on the same directory (another process) also reads it.
    again = CountingFeaturizer(lm)
    assert torch.equal(CachedFeaturizer(again, tmp_path).embed(PROMPTS, RESPONSES), first)
    assert again.calls == []


def test_only_missing_rows_are_computed_and_duplicates_once(tiny, tmp_path: Path) -> None:
    counting = CountingFeaturizer(LMFeaturizer(*tiny))
    cached = CachedFeaturizer(counting, tmp_path)
    cached.embed(PROMPTS[:2], RESPONSES[:2])
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[1], PROMPTS[2], PROMPTS[3]]
    responses = [RESPONSES[0], RESPONSES[2], RESPONSES[1], RESPONSES[2], RESPONSES[3]]
    out = cached.embed(prompts, responses)
    assert counting.calls[1] == [(PROMPTS[2], RESPONSES[2]), (PROMPTS[3], RESPONSES[3])]
    assert torch.equal(out[1], out[3])
    assert cached.hits == 2 and cached.misses == 4


def test_cache_keys_separate_featurizers_and_fields(tiny, tmp_path: Path) -> None:
    assert cache_key("m", "ab", "c") != cache_key("m", "a", "bc")
    assert cache_key("m", "a", "b") != cache_key("n", "a", "b")
    model, tokenizer = tiny
    first = CountingFeaturizer(LMFeaturizer(model, tokenizer, featurizer_id="one"))
    second = CountingFeaturizer(LMFeaturizer(model, tokenizer, featurizer_id="two"))
    CachedFeaturizer(first, tmp_path).embed(PROMPTS, RESPONSES)
    CachedFeaturizer(second, tmp_path).embed(PROMPTS, RESPONSES)
    assert second.rows == len(PROMPTS)  # another featurizer id never reuses rows


def test_a_corrupt_cache_file_is_recomputed(tiny, tmp_path: Path) -> None:
    counting = CountingFeaturizer(LMFeaturizer(*tiny))
    cached = CachedFeaturizer(counting, tmp_path)
    good = cached.embed(PROMPTS[:1], RESPONSES[:1])
    path = cached.path_for(cache_key(cached.featurizer_id, PROMPTS[0], RESPONSES[0]))
    path.write_bytes(b"garbage")
    torch.testing.assert_close(cached.embed(PROMPTS[:1], RESPONSES[:1]), good)
    assert counting.rows == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_it_shows_a_progress_bar_when_asked(tiny, tmp_path: Path, capsys) -> None:
    cached = CachedFeaturizer(LMFeaturizer(*tiny), tmp_path, progress=True, chunk_size=2)
    cached.embed(PROMPTS, RESPONSES)
    assert "features" in capsys.readouterr().err
    quiet = CachedFeaturizer(LMFeaturizer(*tiny), tmp_path / "q", progress_min=100)
    quiet.embed(PROMPTS, RESPONSES)
    assert capsys.readouterr().err == ""


def test_the_id_does_not_depend_on_where_the_model_was_loaded_from(tiny) -> None:
    model, tokenizer = tiny
    before = LMFeaturizer(model, tokenizer).featurizer_id
    old = model.config.name_or_path
    try:
        model.config.name_or_path = "/somewhere/else"
        assert LMFeaturizer(model, tokenizer).featurizer_id == before
    finally:
        model.config.name_or_path = old
    assert LMFeaturizer(model, tokenizer, max_length=64).featurizer_id != before


def test_the_id_changes_with_the_weights_dtype() -> None:
    model, tokenizer = tiny_causal_lm(seed=0)
    before = LMFeaturizer(model, tokenizer).featurizer_id
    assert LMFeaturizer(model.to(torch.bfloat16), tokenizer).featurizer_id != before
