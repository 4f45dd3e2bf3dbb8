"""Generation throughput of LMPolicy.sample next to plain `model.generate`, same settings.

    .venv/bin/python bench/generation.py [--prompts 16] [--k 4] [--max-new-tokens 32]
                                         [--repeats 3] [--out var/bench/generation.json]

Both sides load SmolLM2-135M-Instruct from the safetensors cache (converted from the GGUF file
on first use), apply the same chat template to the same prompts, pad on the left, and sample
with the same top-k, temperature, max_new_tokens, K samples per prompt and seed; each side's
time includes tokenizing and decoding. Three variants run interleaved, `--repeats` times each
after one untimed warm-up round, and the medians are reported:

- plain: `model.generate` on a separate copy of the base model (no peft anywhere);
- ours (fresh adapter): `LMPolicy.sample` right after construction (LoRA B = 0); its outputs
  must equal plain's token for token, which the script checks;
- ours (trained adapter): the same policy with non-zero adapter weights, as after any update.

Tokens per second counts generated tokens up to and including each sequence's EOS (padding
after EOS is not counted). Target: ours >= 0.9 x plain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import torch  # noqa: E402

from ml_worker.core.policies.lm import DEFAULT_CACHE_DIR, LMPolicy, load_smollm2  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in one sentence.",
    "Write a haiku about autumn.",
    "Give me three tips for a job interview.",
    "What is 17 times 23?",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "Name a famous painting by Leonardo da Vinci.",
    "How do I boil an egg?",
    "What does a CPU do?",
    "Suggest a name for a pet turtle.",
    "Summarize the plot of Romeo and Juliet.",
    "What is the difference between weather and climate?",
    "List two benefits of regular exercise.",
    "Write a short apology for being late.",
    "What is the largest planet in the solar system?",
    "How many legs does a spider have?",
    "What is a prime number?",
    "Describe the taste of lemon.",
    "Who wrote 'Pride and Prejudice'?",
]


def count_tokens(new_tokens: torch.Tensor, eos_id: int, pad_id: int) -> int:
    """Generated tokens per row up to and including the first EOS/pad: new_tokens [N, T].

    Same rule as `LMPolicy.last_token_counts`.
    """
    stop = (new_tokens == eos_id) | (new_tokens == pad_id)
    seen_stop_before = torch.cumsum(stop.int(), dim=1) - stop.int()
    return int((seen_stop_before == 0).sum())


def run_plain(model, tokenizer, prompts, k, cfg, seed) -> tuple[float, list[str], int]:
    t0 = time.perf_counter()
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**enc, generation_config=cfg)
    new = out[:, enc["input_ids"].shape[1] :]
    decoded = []
    for row in new.tolist():
        for i, t in enumerate(row):
            if t in (cfg.eos_token_id, cfg.pad_token_id):
                row = row[:i]
                break
        decoded.append(tokenizer.decode(row, skip_special_tokens=True))
    elapsed = time.perf_counter() - t0
    return elapsed, decoded, count_tokens(new, cfg.eos_token_id, cfg.pad_token_id)


def run_ours(policy: LMPolicy, prompts, k, seed) -> tuple[float, list[str], int]:
    t0 = time.perf_counter()
    samples = policy.sample(prompts, k, seed=seed)
    elapsed = time.perf_counter() - t0
    flat = [s for group in samples for s in group]
    return elapsed, flat, sum(policy.last_token_counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice). On a machine shared with "
        "other busy processes, 1 thread is often 2-3x faster than 2 (no OpenMP barrier waits).",
    )
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--out", type=Path, default=Path("var/bench/generation.json"))
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]

    t0 = time.perf_counter()
    plain_model, tokenizer = load_smollm2(args.cache_dir)
    load_s = time.perf_counter() - t0
    policy_model, policy_tokenizer = load_smollm2(args.cache_dir)
    policy = LMPolicy(
        policy_model,
        policy_tokenizer,
        top_k=args.top_k,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        gen_batch_size=args.prompts * args.k,  # one batch, as plain generate
    )
    cfg = policy.generation_config(args.k, do_sample=True)
    fresh = [p.detach().clone() for p in policy.params]
    g = torch.Generator().manual_seed(0)
    trained = [p + 0.02 * torch.randn(p.shape, generator=g) for p in fresh]

    def set_adapter(values: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip(policy.params, values, strict=True):
                p.copy_(v)

    def plain(seed):
        return run_plain(plain_model, tokenizer, prompts, args.k, cfg, seed)

    def ours_fresh(seed):
        set_adapter(fresh)
        return run_ours(policy, prompts, args.k, seed)

    def ours_trained(seed):
        set_adapter(trained)
        return run_ours(policy, prompts, args.k, seed)

    variants = {"plain": plain, "ours_fresh": ours_fresh, "ours_trained": ours_trained}
    print(
        f"SmolLM2-135M-Instruct, {args.prompts} prompts x {args.k} samples x "
        f"{args.max_new_tokens} new tokens, top_k={args.top_k}, T={args.temperature}, "
        f"torch threads={torch.get_num_threads()} (load from cache {load_s:.1f} s)"
    )
    outputs: dict[str, list[str]] = {}
    for name, fn in variants.items():  # warm-up, untimed
        outputs[name] = fn(1000)[1]
    identical = outputs["plain"] == outputs["ours_fresh"]
    print(f"fresh adapter reproduces plain generate token for token: {identical}")

    times: dict[str, list[float]] = {n: [] for n in variants}
    tokens: dict[str, list[int]] = {n: [] for n in variants}
    for rep in range(args.repeats):
        for name, fn in variants.items():
            elapsed, _, n_tok = fn(rep)
            times[name].append(elapsed)
            tokens[name].append(n_tok)
            print(f"  repeat {rep} {name:13s} {elapsed:6.2f} s  {n_tok / elapsed:7.1f} tok/s")

    rates = {
        n: statistics.median(t / s for t, s in zip(tokens[n], times[n], strict=True))
        for n in variants
    }
    result = {
        "settings": {
            "prompts": args.prompts,
            "k": args.k,
            "max_new_tokens": args.max_new_tokens,
            "top_k": args.top_k,
            "temperature": args.temperature,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
        },
        "times_s": times,
        "tokens": tokens,
        "median_tokens_per_s": rates,
        "median_time_s": {n: statistics.median(times[n]) for n in variants},
        "ratio_ours_fresh_vs_plain": rates["ours_fresh"] / rates["plain"],
        "ratio_ours_trained_vs_plain": rates["ours_trained"] / rates["plain"],
        "fresh_adapter_outputs_identical_to_plain": identical,
        "target_ratio": 0.9,
    }
    print(
        f"median tokens/s: plain {rates['plain']:.1f}, ours (fresh adapter) "
        f"{rates['ours_fresh']:.1f}, ours (trained adapter) {rates['ours_trained']:.1f}"
    )
    print(
        f"ratio ours/plain: fresh {result['ratio_ours_fresh_vs_plain']:.3f}, "
        f"trained {result['ratio_ours_trained_vs_plain']:.3f} (target >= 0.9)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
