"""Exports: preferences that TRL reads, and labels with their provenance.

Formats, as written here and documented in ``docs/research.md``:

- **Preferences, standard form**: one JSON object per line,
  ``{"prompt": str, "chosen": str, "rejected": str}``, the form TRL's preference trainers
  (``DPOTrainer``, ``RewardTrainer``...) read as "standard, explicit prompt".
- **Preferences, conversational form**: ``prompt`` is a list of messages (the prompt's own
  chat history when it has one, else one user message) and ``chosen`` / ``rejected`` are
  one-message lists ``[{"role": "assistant", "content": ...}]``.
- Every label is one row: a comparison labeled by three annotators gives three rows (the
  weight of a contested pair is then its label count, as when training on raw labels).
- Ties and "both bad" say nothing about which response is better, so by default they are
  **excluded**. With ``keep_ties`` they are kept in a form no preference trainer can
  misread as "A preferred": their ``chosen`` and ``rejected`` are **null**, the two texts
  are in ``response_a`` / ``response_b`` (in the comparison's order), and ``choice`` says
  ``"tie"`` or ``"both_bad"``. A trainer that ignores those columns fails on the null
  instead of learning a preference nobody gave (checked with TRL's ``DPOTrainer`` and
  ``RewardTrainer`` in ``tests/rlhf_platform/datafiles/test_trl.py``); filter with
  ``tie == False`` to train, or use the tie rows for a label-smoothed or KTO-style loss.
  With ``keep_ties`` every row has the columns ``prompt, chosen, rejected, response_a,
  response_b, choice, tie``; without it, exactly ``prompt, chosen, rejected``.
- An export with no rows is not written: the API answers 409 ``nothing_to_export`` and the
  commands stop with that message, since an empty JSONL file is something neither
  ``datasets.load_dataset`` nor a person can read.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from django.db.models import QuerySet

from ml_worker.core.choice import DECISIVE, Choice
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.datafiles.cells import spreadsheet_safe
from rlhf_platform.datafiles.formats import (
    LABEL_FORMATS,
    LABEL_SOURCES,
    PREFERENCE_FORMS,
    Progress,
)
from rlhf_platform.errors import InvalidInput, ServiceError
from rlhf_platform.labeling.models import Label
from rlhf_platform.raters.selectors import left_out_q

if TYPE_CHECKING:
    from typing_extensions import Buffer


def _labels(campaign: Campaign, source: str) -> QuerySet[Label]:
    if source not in LABEL_SOURCES:
        raise InvalidInput(
            f"Unknown source {source!r}; use {', '.join(LABEL_SOURCES)}.", code="invalid_source"
        )
    # A label a researcher flagged is left out of every export (and of training), as are
    # the labels of excluded raters and those on gold pairs (issue 20).
    qs = Label.objects.filter(campaign=campaign, flagged_at__isnull=True).exclude(left_out_q())
    if source != "all":
        qs = qs.filter(source=source)
    return qs.order_by("id")


# --- Preferences ----------------------------------------------------------------------------


def preferences_count(*, campaign: Campaign, keep_ties: bool = False, source: str = "all") -> int:
    qs = _labels(campaign, source)
    if not keep_ties:
        qs = qs.filter(choice__in=DECISIVE)
    return qs.count()


_Turns = str | list[dict[str, str]]


def preference_records(
    *,
    campaign: Campaign,
    form: str = "standard",
    keep_ties: bool = False,
    source: str = "all",
    chunk_size: int = 1000,
) -> Iterator[dict[str, Any]]:
    """TRL preference rows, one per label, oldest label first (see the module docstring).

    Streams with ``iterator(chunk_size)``: memory stays at one chunk of labels with their
    texts (about 1,000 x a few KB) however large the campaign is.
    """
    if form not in PREFERENCE_FORMS:
        raise InvalidInput(
            f"Unknown form {form!r}; use {', '.join(PREFERENCE_FORMS)}.", code="invalid_form"
        )
    qs = _labels(campaign, source).select_related(
        "comparison__prompt", "comparison__response_a", "comparison__response_b"
    )
    if not keep_ties:
        qs = qs.filter(choice__in=DECISIVE)
    # Texts in the standard form, lists of messages in the conversational one.
    a: _Turns
    b: _Turns
    chosen: _Turns
    rejected: _Turns
    prompt: _Turns
    for label in qs.iterator(chunk_size=chunk_size):
        c = label.comparison
        a, b = c.response_a.text, c.response_b.text
        decisive = Choice(label.choice).decisive
        chosen, rejected = (b, a) if label.choice == Choice.B else (a, b)
        if form == "standard":
            prompt = c.prompt.text
        else:
            history = c.prompt.messages or [{"role": "user", "content": c.prompt.text}]
            prompt = [{"role": m["role"], "content": m["content"]} for m in history]
            a, b, chosen, rejected = (
                [{"role": "assistant", "content": text}] for text in (a, b, chosen, rejected)
            )
        row: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if keep_ties:
            if not decisive:
                row["chosen"] = row["rejected"] = None
            row.update(response_a=a, response_b=b, choice=label.choice, tie=not decisive)
        yield row


# Bytes handed on at a time by the streaming writers: big enough that a response is a few
# hundred writes, not one per row, small enough that memory stays flat (the labels' query
# streams in chunks of 1,000 rows; a Parquet row group is 1,000 rows).
STREAM_CHUNK_BYTES = 64 * 1024


class _Sink(io.RawIOBase):
    """A write-only file that keeps what was written until :meth:`take` hands it on, so the
    push-style writers (csv, pyarrow) can feed a generator."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0  # bytes waiting
        self.pos = 0  # bytes written in all

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        data = bytes(data)
        self._parts.append(data)
        self.size += len(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts, self.size = [], 0
        return data


def iter_jsonl(rows: Iterable[dict[str, Any]], progress: Progress = None) -> Iterator[bytes]:
    """JSON Lines, as chunks of about :data:`STREAM_CHUNK_BYTES`."""
    parts: list[bytes] = []
    size = 0
    for row in rows:
        line = json.dumps(row, ensure_ascii=False).encode() + b"\n"
        parts.append(line)
        size += len(line)
        if progress:
            progress(1)
        if size >= STREAM_CHUNK_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[bytes], progress: Progress = None) -> int:
    n = 0

    def count(k: int) -> None:
        nonlocal n
        n += k
        if progress:
            progress(k)

    for chunk in iter_jsonl(rows, count):
        out.write(chunk)
    return n


class NothingToExport(ServiceError):
    code = "nothing_to_export"
    status = 409


def require_rows(count: int, what: str) -> None:
    """An export of no rows is refused (see the module docstring): 409 with the reason."""
    if count == 0:
        raise NothingToExport(
            f"No {what} match this export yet, so there is no file to give: an empty JSONL "
            "file is not a dataset any loader reads. Label first, or widen the filters."
        )


# --- Labels with provenance -----------------------------------------------------------------

# Column order of the label export (also the CSV header and the Parquet schema).
LABEL_COLUMNS: list[tuple[str, str]] = [
    ("label_id", "int64"),
    ("campaign", "string"),
    ("comparison_id", "int64"),
    ("round_index", "int64"),
    ("prompt_id", "int64"),
    ("prompt", "string"),
    ("response_a_id", "int64"),
    ("response_a", "string"),
    ("response_b_id", "int64"),
    ("response_b", "string"),
    ("choice", "string"),
    ("source", "string"),
    ("annotator", "string"),
    ("judge_name", "string"),
    ("judge_prob_a", "float64"),
    ("shown_swapped", "bool_"),
    ("shown_first", "string"),
    ("rationale", "string"),
    ("time_taken_ms", "int64"),
    ("cost", "string"),
    ("acquisition_rule", "string"),
    ("acquisition_score", "float64"),
    ("p_mean", "float64"),
    ("p_var", "float64"),
    ("policy_version_id", "int64"),
    ("reward_version_id", "int64"),
    ("response_a_policy_version_id", "int64"),
    ("response_b_policy_version_id", "int64"),
    ("comparison_created_at", "string"),
    ("labeled_at", "string"),
]


def labels_count(*, campaign: Campaign, source: str = "all") -> int:
    return _labels(campaign, source).count()


def label_records(
    *, campaign: Campaign, source: str = "all", chunk_size: int = 1000
) -> Iterator[dict[str, Any]]:
    """Every label with its provenance: who gave it (annotator or judge), the order it was
    shown in (``shown_first`` is the response displayed on the left), the acquisition rule
    and score, the model versions that chose the pair and produced each response, and the
    timestamps (ISO 8601, UTC). ``choice`` is in the comparison's own A/B terms."""
    qs = _labels(campaign, source).select_related(
        "annotator",
        "comparison__round",
        "comparison__prompt",
        "comparison__response_a",
        "comparison__response_b",
    )
    for label in qs.iterator(chunk_size=chunk_size):
        c = label.comparison
        yield {
            "label_id": label.pk,
            "campaign": campaign.name,
            "comparison_id": c.pk,
            "round_index": c.round.index if c.round else None,
            "prompt_id": c.prompt_id,
            "prompt": c.prompt.text,
            "response_a_id": c.response_a_id,
            "response_a": c.response_a.text,
            "response_b_id": c.response_b_id,
            "response_b": c.response_b.text,
            "choice": label.choice,
            "source": label.source,
            "annotator": label.annotator.username if label.annotator else None,
            "judge_name": label.judge_name or None,
            "judge_prob_a": label.judge_prob_a,
            "shown_swapped": label.shown_swapped,
            "shown_first": "B" if label.shown_swapped else "A",
            "rationale": label.rationale,
            "time_taken_ms": label.time_taken_ms,
            "cost": str(label.cost),
            "acquisition_rule": c.acquisition_rule,
            "acquisition_score": c.acquisition_score,
            "p_mean": c.p_mean,
            "p_var": c.p_var,
            "policy_version_id": c.policy_version_id,
            "reward_version_id": c.reward_version_id,
            "response_a_policy_version_id": c.response_a.policy_version_id,
            "response_b_policy_version_id": c.response_b.policy_version_id,
            "comparison_created_at": c.created_at.isoformat(),
            "labeled_at": label.created_at.isoformat(),
        }


def iter_labels(
    rows: Iterable[dict[str, Any]], fmt: str, progress: Progress = None
) -> Iterator[bytes]:
    """Label records as JSONL, CSV or Parquet (row groups of 1,000 rows), as chunks of bytes:
    the API streams them to the client, the commands write them to a file."""
    if fmt not in LABEL_FORMATS:
        raise InvalidInput(
            f"Unknown format {fmt!r}; use {', '.join(LABEL_FORMATS)}.", code="invalid_format"
        )
    return _iter_labels(rows, fmt, progress)


def _iter_labels(rows: Iterable[dict[str, Any]], fmt: str, progress: Progress) -> Iterator[bytes]:
    if fmt == "jsonl":
        yield from iter_jsonl(rows, progress)
        return
    sink = _Sink()
    if fmt == "csv":
        # typeshed asks for a buffer with a ``name``, which a RawIOBase lacks; TextIOWrapper
        # reads it only for its own ``name``, never asked for here.
        text = io.TextIOWrapper(  # type: ignore[type-var]
            sink, encoding="utf-8", newline="", write_through=True
        )
        writer = csv.DictWriter(text, fieldnames=[name for name, _ in LABEL_COLUMNS])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else spreadsheet_safe(v) for k, v in row.items()})
            if progress:
                progress(1)
            if sink.size >= STREAM_CHUNK_BYTES:
                yield sink.take()
        text.detach()
        yield sink.take()
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in LABEL_COLUMNS])
    with pq.ParquetWriter(sink, schema) as writer:
        batch: list[dict[str, Any]] = []
        for record in _with_end(rows):
            if record is not None:
                batch.append(record)
            if batch and (record is None or len(batch) >= 1000):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                if progress:
                    progress(len(batch))
                batch = []
                yield sink.take()
    yield sink.take()


def _with_end(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any] | None]:
    yield from rows
    yield None


def write_labels(
    rows: Iterable[dict[str, Any]], out: IO[bytes], fmt: str, progress: Progress = None
) -> int:
    """Write label records as JSONL, CSV or Parquet to ``out``; returns the row count."""
    n = 0

    def count(k: int) -> None:
        nonlocal n
        n += k
        if progress:
            progress(k)

    for chunk in iter_labels(rows, fmt, count):
        out.write(chunk)
    return n
