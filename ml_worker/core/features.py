"""Frozen backbone features of (prompt, response) pairs for the reward model.

- ``Featurizer``: the protocol (``dim``, ``featurizer_id``, ``embed(prompts, responses)``).
- ``LMFeaturizer``: a causal LM's final hidden state (after the final norm) at the last token
  of the chat-formatted conversation ``[user: prompt, assistant: response]``. Texts are
  tokenized one by one, sorted by length and batched with an explicit attention mask and
  position ids, so a row's features do not depend on its batch, on padding side or on padding
  length (up to float rounding). Rows of one prompt share its tokens: the backbone runs the
  common prefix once and only each response's own tokens per row (a causal LM's hidden states
  of the later tokens are the same either way, up to float rounding).
- ``CachedFeaturizer``: wraps any featurizer with an on-disk cache keyed by
  ``sha256(featurizer_id, prompt, response)``; a cached row is never recomputed.

Featurizing costs a prefill of the backbone, so everything that scores responses more than
once should go through the cache. Sharing a prompt's tokens matters: on the benchmark's pool
(45 of a row's 122 tokens on average are the chat-formatted prompt) the 48 responses of one
prompt took 81 s on one thread of the 2-core development machine without it and 63 s with it
(2026-12-02, features equal to 5e-5 of values up to 32).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, cast, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = ["CachedFeaturizer", "Featurizer", "LMFeaturizer", "cache_key"]


@runtime_checkable
class Featurizer(Protocol):
    """Maps (prompt, response) pairs to fixed feature vectors."""

    @property
    def dim(self) -> int: ...

    @property
    def featurizer_id(self) -> str:
        """Changes whenever the features would change (model, weights, template, ...)."""
        ...

    def embed(self, prompts: list[str], responses: list[str]) -> Tensor:
        """``N`` prompts and ``N`` responses -> float32 ``[N, dim]`` on the CPU."""
        ...


def _check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")


# --------------------------------------------------------------------------------------------
# Language-model features
# --------------------------------------------------------------------------------------------


class LMFeaturizer:
    """Last-token final hidden state of a (frozen) transformers causal LM.

    ``model``: a ``*ForCausalLM`` (its decoder is run without the LM head) or a bare decoder;
    ``tokenizer``: its tokenizer, with a chat template. Inputs longer than ``max_length``
    tokens are truncated from the left, so that the end of the response (where the feature is
    read) is always kept. ``padding_side`` only matters for tests and for speed.
    ``share_prompts``: rows of the same prompt whose token ids share at least
    ``min_shared_tokens`` leading tokens run that prefix once (its key/value cache is reused
    by their batches); it changes the cost, not the features (up to float rounding).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 16,
        max_length: int = 1024,
        padding_side: Literal["left", "right"] = "right",
        featurizer_id: str | None = None,
        share_prompts: bool = True,
        min_shared_tokens: int = 8,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.padding_side = padding_side
        self.share_prompts = share_prompts
        self.min_shared_tokens = min_shared_tokens
        get_decoder = getattr(model, "get_decoder", None)
        self._decoder = get_decoder() if callable(get_decoder) else model
        if self._decoder is None:
            self._decoder = model
        self._dim = int(model.config.hidden_size)
        self._id = featurizer_id or self._fingerprint()
        self.forward_calls = 0  # number of backbone forward passes (for tests and stats)
        self.tokens_run = 0  # token positions those passes ran, padding included

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def featurizer_id(self) -> str:
        return self._id

    def _fingerprint(self) -> str:
        """Id from the config, a sample of the weights and the chat template.

        Independent of where the model was loaded from (two workers loading the same weights
        from different paths share cached rows), but any change of weights, architecture,
        template or ``max_length`` gives a new id, so stale features are never reused.
        """
        config = self.model.config.to_dict()
        for key in ("_name_or_path", "name_or_path", "_commit_hash", "dtype", "torch_dtype"):
            config.pop(key, None)
        h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        emb = self.model.get_input_embeddings().weight.detach()
        h.update(str(emb.dtype).encode())  # the weights' real dtype, not the config's
        for rows in (emb[:8], emb[-8:]):
            h.update(rows.float().cpu().numpy().tobytes())
        last = list(self.model.parameters())[-1].detach()  # e.g. the final norm
        h.update(last.flatten()[:256].float().cpu().numpy().tobytes())
        h.update(str(getattr(self.tokenizer, "chat_template", "")).encode())
        h.update(f"max_length={self.max_length}".encode())
        return f"lm:{self.model.config.model_type}:{h.hexdigest()[:16]}"

    def format(self, prompt: str, response: str) -> str:
        """The chat-formatted text whose last token's hidden state is the feature."""
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        return cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False))

    def tokenize(self, prompts: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        """Token ids per pair, left-truncated to ``max_length``."""
        _check_pairs(prompts, responses)
        texts = [self.format(p, r) for p, r in zip(prompts, responses, strict=True)]
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [list(row[-self.max_length :]) for row in ids]

    def embed(self, prompts: list[str], responses: list[str]) -> Tensor:
        """``[N, dim]`` float32 features (CPU), in the order of the inputs."""
        ids = self.tokenize(prompts, responses)
        out = torch.empty(len(ids), self.dim, dtype=torch.float32)
        if not ids:
            return out
        if any(len(row) == 0 for row in ids):
            raise ValueError("a formatted (prompt, response) produced no tokens")
        alone: list[int] = []
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(i)
        with self._inference():
            for rows in groups.values():
                share = self.share_prompts and len(rows) > 1
                shared = _shared_prefix([ids[i] for i in rows]) if share else 0
                if shared < self.min_shared_tokens:
                    alone.extend(rows)
                    continue
                prefix_ids = ids[rows[0]][:shared]
                self.tokens_run += shared
                run = self._decoder(
                    input_ids=torch.tensor([prefix_ids], dtype=torch.long).to(self._device),
                    use_cache=True,
                )
                self.forward_calls += 1
                prefix = Prefix(run.cache, prefix_ids, run.last_hidden_state[0])
                self._batches(out, rows, [ids[i][shared:] for i in rows], prefix)
            self._batches(out, alone, [ids[i] for i in alone], None)
        return out

    @property
    def _device(self) -> torch.device:
        return cast(torch.device, next(self.model.parameters()).device)

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def _batches(
        self, out: Tensor, rows: list[int], tokens: list[list[int]], prefix: Prefix | None
    ) -> None:
        """``out[rows[j]]`` from ``tokens[j]``, in length-sorted batches of ``batch_size``."""
        order = sorted(range(len(rows)), key=lambda j: len(tokens[j]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[[rows[j] for j in chunk]] = self._forward([tokens[j] for j in chunk], prefix)

    def _forward(self, rows: list[list[int]], prefix: Prefix | None = None) -> Tensor:
        """Padded forward of one batch -> ``[n, dim]`` rows (`_read_rows`).

        ``prefix``: the tokens all ``rows`` continue, already run (`Prefix`)."""
        device = self._device
        width = max(len(r) for r in rows)
        pad_id = self.tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else int(pad_id)  # masked out: any id works
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            sl = slice(width - len(row), width) if self.padding_side == "left" else slice(len(row))
            input_ids[i, sl] = torch.tensor(row, dtype=torch.long)
            mask[i, sl] = 1
        # Real tokens get positions 0..len-1 whatever the padding side (after the prefix's).
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        last = width - 1 - mask.flip(dims=[1]).argmax(dim=1)  # index of the last real token
        past = None
        if prefix is not None:
            shared = len(prefix.ids)
            past = copy.deepcopy(prefix.cache)  # the forward appends to it
            past.batch_repeat_interleave(len(rows))
            position_ids = position_ids + shared
            mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), mask], dim=1)
        hidden = self._decoder(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=position_ids.to(device),
            cache=past,
            use_cache=past is not None,
        ).last_hidden_state
        self.forward_calls += 1
        self.tokens_run += input_ids.numel()
        return self._read_rows(hidden, last.to(device), rows, prefix)

    def _read_rows(
        self, hidden: Tensor, last: Tensor, rows: list[list[int]], prefix: Prefix | None
    ) -> Tensor:
        """A batch's output rows from its hidden states ``[n, width, hidden_size]``: the
        last real token's (``last`` [n]). Subclasses may read more (e.g. token likelihoods)."""
        return hidden[torch.arange(len(rows), device=hidden.device), last].float().cpu()


class Prefix(NamedTuple):
    """Tokens that every row of a batch continues, run once: their key/value ``cache``, their
    token ``ids`` and their final ``hidden`` states ``[len(ids), hidden_size]``."""

    cache: Any
    ids: list[int]
    hidden: Tensor


def _shared_prefix(rows: list[list[int]]) -> int:
    """Length of the longest common prefix of token rows, leaving every row one token of its own."""
    first = rows[0]
    n = min(len(r) for r in rows) - 1
    for row in rows[1:]:
        k = 0
        while k < n and row[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def cache_key(featurizer_id: str, prompt: str, response: str) -> str:
    """sha256 hex of an unambiguous encoding of (featurizer id, prompt, response)."""
    payload = json.dumps([featurizer_id, prompt, response], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CachedFeaturizer:
    """On-disk feature cache in front of another featurizer.

    One ``.npy`` file per row at ``cache_dir/<key[:2]>/<key>.npy``, written to a temporary
    name and renamed into place, so concurrent workers (even on several hosts sharing the
    directory) never read a half-written row; two workers computing the same row both write
    identical bytes. Within a call, repeated pairs are computed once. Misses are computed in
    chunks of ``chunk_size`` and written as they finish, so an interrupted run keeps its work;
    ``progress=True`` (or ``None``: only when at least ``progress_min`` rows are missing) shows
    a tqdm bar.
    """

    def __init__(
        self,
        inner: Featurizer,
        cache_dir: str | Path,
        *,
        progress: bool | None = None,
        progress_min: int = 256,
        chunk_size: int = 256,
    ) -> None:
        self.inner = inner
        self.cache_dir = Path(cache_dir)
        self.progress = progress
        self.progress_min = progress_min
        self.chunk_size = chunk_size
        self.hits = 0
        self.misses = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def featurizer_id(self) -> str:
        return self.inner.featurizer_id

    def path_for(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.npy"

    def _read(self, key: str) -> Tensor | None:
        path = self.path_for(key)
        try:
            row = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError):
            return None  # unreadable (e.g. truncated by a crash outside our atomic write)
        if row.shape != (self.dim,):
            return None
        return torch.from_numpy(row.astype(np.float32, copy=False))

    def _write(self, key: str, row: Tensor) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, row.detach().float().cpu().numpy(), allow_pickle=False)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def embed(self, prompts: list[str], responses: list[str]) -> Tensor:
        """``[N, dim]`` float32; only rows missing from the cache reach the inner featurizer."""
        _check_pairs(prompts, responses)
        fid = self.featurizer_id
        keys = [cache_key(fid, p, r) for p, r in zip(prompts, responses, strict=True)]
        out = torch.empty(len(keys), self.dim, dtype=torch.float32)
        missing: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in missing:
                missing[key].append(i)
                continue
            row = self._read(key)
            if row is None:
                missing[key] = [i]
            else:
                out[i] = row
                self.hits += 1
        todo = list(missing.items())
        self.misses += len(todo)
        show = self.progress if self.progress is not None else len(todo) >= self.progress_min
        bar = None
        if show and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="features", unit="row")
        try:
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start : start + self.chunk_size]
                first = [idx[0] for _, idx in chunk]
                rows = self.inner.embed([prompts[i] for i in first], [responses[i] for i in first])
                if rows.shape != (len(chunk), self.dim):
                    raise ValueError(
                        f"inner featurizer returned {tuple(rows.shape)}, "
                        f"expected {(len(chunk), self.dim)}"
                    )
                for (key, idx), row in zip(chunk, rows, strict=True):
                    self._write(key, row)
                    out[idx] = row.float()
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return out
