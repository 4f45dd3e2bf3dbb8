"""Imports: prompts (JSONL, CSV, Parquet) and response pairs to label (plain A/B campaigns).

Every row is checked before anything is written; a file with a bad row imports nothing and
the error lists every bad row (``import_invalid``, ``details: [{line, error}]``). Formats:
:mod:`.formats`; the documentation is in ``docs/research.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction

from ml_worker.core.choice import Choice
from rlhf_platform import limits
from rlhf_platform.campaigns.models import AcquisitionRule, Campaign, Prompt, Split
from rlhf_platform.datafiles.formats import (
    IMPORT_FORMATS,
    Progress,
    decode_text,
    read_parquet_records,
)
from rlhf_platform.errors import InvalidInput
from rlhf_platform.labeling.models import Comparison
from rlhf_platform.rounds.models import Response


@dataclass
class PromptRow:
    text: str
    split: str
    reference: str
    messages: list[dict[str, str]] | None
    metadata: dict[str, Any]


def _parse_prompt_record(record: Any) -> PromptRow:
    """One import row (a JSON object, a CSV row or a Parquet row); ValueError says why not.

    Every text is checked for what cannot be stored (``limits.value_problem``) and for its
    length (``PROMPT_MAX_CHARS``), so a bad row is refused here, never by the database.
    """
    if not isinstance(record, dict):
        raise ValueError("expected an object with a 'prompt' field")
    problem = limits.value_problem(record)
    if problem:
        raise ValueError(problem)
    text = record.get("prompt", record.get("text"))
    messages = record.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ValueError("'messages' must be a list of {role, content} objects")
        if not messages:
            messages = None
        else:
            messages = [{"role": m["role"], "content": m["content"]} for m in messages]
            history = sum(len(m["content"]) for m in messages)
            if history > settings.PROMPT_MAX_CHARS:
                raise ValueError(
                    f"'messages' hold {history} characters; at most "
                    f"{settings.PROMPT_MAX_CHARS} are accepted (PROMPT_MAX_CHARS)"
                )
        if text in (None, "") and messages:
            text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'prompt'")
    if len(text) > settings.PROMPT_MAX_CHARS:
        raise ValueError(
            f"the prompt is {len(text)} characters; at most {settings.PROMPT_MAX_CHARS} are "
            "accepted (PROMPT_MAX_CHARS)"
        )
    split = record.get("split") or Split.TRAIN
    if split not in Split.values:
        raise ValueError(f"split must be one of {', '.join(Split.values)}, not {split!r}")
    reference = record.get("reference") or ""
    if not isinstance(reference, str):
        raise ValueError("'reference' must be a string")
    if len(reference) > settings.RESPONSE_MAX_CHARS:
        raise ValueError(
            f"the reference is {len(reference)} characters; at most "
            f"{settings.RESPONSE_MAX_CHARS} are accepted (RESPONSE_MAX_CHARS)"
        )
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            raise ValueError("'metadata' is not valid JSON") from None
        problem = limits.value_problem(metadata)
        if problem:
            raise ValueError(f"'metadata' {problem}")
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    return PromptRow(
        text=text, split=split, reference=reference, messages=messages, metadata=metadata
    )


def parse_prompt_file(content: str, fmt: str) -> list[PromptRow]:
    """Parse JSONL or CSV prompt rows; raise InvalidInput listing every bad line."""
    rows: list[PromptRow] = []
    errors: list[dict[str, Any]] = []
    if fmt == "jsonl":
        for lineno, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(_parse_prompt_record(json.loads(line)))
            except json.JSONDecodeError as exc:
                errors.append({"line": lineno, "error": f"invalid JSON: {exc.msg}"})
            except ValueError as exc:
                errors.append({"line": lineno, "error": str(exc)})
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(content, newline=""))
        try:
            if not reader.fieldnames or not {"prompt", "text"} & set(reader.fieldnames):
                raise InvalidInput(
                    "The CSV needs a header row with a 'prompt' column.", code="import_invalid"
                )
            for record in reader:
                try:
                    if None in record:
                        raise ValueError("more fields than the header has")
                    rows.append(_parse_prompt_record(record))
                except ValueError as exc:
                    errors.append({"line": reader.line_num, "error": str(exc)})
        except csv.Error as exc:
            raise InvalidInput(
                f"line {reader.line_num}: not readable as CSV: {exc}", code="import_invalid"
            ) from None
    else:
        raise InvalidInput(f"Unknown format {fmt!r}; use jsonl or csv.", code="invalid_format")
    return checked_rows(rows, errors)


_Row = TypeVar("_Row")


def checked_rows(
    rows: list[_Row], errors: list[dict[str, Any]], *, unit: str = "line"
) -> list[_Row]:
    """``rows`` if the whole file parsed; else InvalidInput listing every bad row (the
    message names the first five, ``details`` holds them all), so nothing is imported."""
    if errors:
        summary = "; ".join(f"{unit} {e['line']}: {e['error']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InvalidInput(
            f"{len(errors)} bad row(s), nothing imported: {summary}{more}",
            code="import_invalid",
            details=errors,
        )
    if not rows:
        raise InvalidInput("The file holds no prompts.", code="import_empty")
    return rows


def prompts_create(
    *,
    campaign: Campaign,
    rows: list[PromptRow],
    progress: Callable[[int], object] | None = None,
    batch_size: int = 1000,
) -> list[Prompt]:
    """Insert parsed rows, ``batch_size`` per INSERT; call inside the import's transaction."""
    created: list[Prompt] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        created += Prompt.objects.bulk_create(
            Prompt(
                campaign=campaign,
                text=row.text,
                split=row.split,
                reference=row.reference,
                messages=row.messages,
                metadata=row.metadata,
            )
            for row in chunk
        )
        if progress:
            progress(len(chunk))
    return created


@transaction.atomic
def prompts_import(*, campaign: Campaign, content: str, fmt: str) -> list[Prompt]:
    """Import every row of a JSONL or CSV file, or none of them."""
    return prompts_create(campaign=campaign, rows=parse_prompt_file(content, fmt))


@dataclass
class PairRow:
    prompt: PromptRow
    response_a: str
    response_b: str
    priority: float
    #: The known answer of a gold pair (issue 20): "A", "B", "tie" or "both_bad".
    gold: str | None = None


def _parse_pair_record(record: Any) -> PairRow:
    """One pair row: the prompt's fields (``prompt`` or ``messages``...), two different
    non-empty responses of at most ``RESPONSE_MAX_CHARS``, an optional finite ``priority``."""
    prompt = _parse_prompt_record(record)
    a, b = record.get("response_a"), record.get("response_b")
    for name, value in (("response_a", a), ("response_b", b)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"missing or empty '{name}'")
        if len(value) > settings.RESPONSE_MAX_CHARS:
            raise ValueError(
                f"'{name}' is {len(value)} characters; at most {settings.RESPONSE_MAX_CHARS} "
                "are accepted (RESPONSE_MAX_CHARS)"
            )
    if a == b:
        raise ValueError("needs two different responses: 'response_a' and 'response_b' are equal")
    raw = record.get("priority", 0.0)
    try:
        if isinstance(raw, bool):
            raise TypeError
        priority = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"'priority' must be a number, not {raw!r}") from None
    if not math.isfinite(priority):
        raise ValueError(f"'priority' must be a finite number, not {raw!r}")
    gold = record.get("gold")
    if gold in (None, ""):
        gold = None
    elif gold not in {c.value for c in Choice}:
        raise ValueError(
            f"'gold' must be one of {', '.join(c.value for c in Choice)}, not {gold!r}"
        )
    return PairRow(prompt=prompt, response_a=a, response_b=b, priority=priority, gold=gold)


def parse_pair_records(
    records: list[Any],
    *,
    unit: str = "line",
    lines: list[int] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> list[PairRow]:
    """Every pair row parsed, or InvalidInput listing every bad one (``details``), with
    ``errors`` found before (unparsable lines) among them, in line order."""
    rows: list[PairRow] = []
    errors = list(errors or [])
    for i, record in enumerate(records):
        try:
            rows.append(_parse_pair_record(record))
        except ValueError as exc:
            errors.append({"line": lines[i] if lines else i + 1, "error": str(exc)})
    errors.sort(key=lambda e: e["line"])
    if not rows and not errors:
        raise InvalidInput("The file holds no pairs.", code="import_empty")
    return checked_rows(rows, errors, unit=unit)


@transaction.atomic
def comparisons_import_pairs(
    *, campaign: Campaign, pairs: list[Any], source: str = "imported"
) -> int:
    """Queue comparisons of existing responses: ``[{prompt, response_a, response_b, ...}]``.

    For plain A/B campaigns without a policy (and the demo before live generation). Every
    bad row is listed (``import_invalid``, ``details: [{line, error}]``) and none is
    imported. A pair with ``messages`` keeps its whole chat history on its prompt; pairs
    with the same prompt text, split and history share one prompt.
    """
    if not pairs:
        return 0
    rows = pairs if all(isinstance(p, PairRow) for p in pairs) else parse_pair_records(pairs)
    prompts: dict[tuple[str, str, str], Prompt] = {}
    for existing in Prompt.objects.filter(
        campaign=campaign, text__in={r.prompt.text for r in rows}
    ):
        prompts.setdefault(_prompt_key(existing.text, existing.split, existing.messages), existing)
    created = 0
    for row in rows:
        p = row.prompt
        key = _prompt_key(p.text, p.split, p.messages)
        prompt = prompts.get(key)
        if prompt is None:
            prompt = prompts[key] = Prompt.objects.create(
                campaign=campaign,
                text=p.text,
                split=p.split,
                reference=p.reference,
                messages=p.messages,
                metadata=p.metadata,
            )
        resp_a = Response.objects.create(prompt=prompt, text=row.response_a, source=source)
        resp_b = Response.objects.create(prompt=prompt, text=row.response_b, source=source)
        if row.gold is not None:
            # A gold pair (its answer known): mixed into annotators' queues, never trained on.
            from rlhf_platform.raters.services import gold_pair_create

            gold_pair_create(
                campaign=campaign,
                prompt=prompt,
                response_a=resp_a,
                response_b=resp_b,
                answer=row.gold,
            )
            created += 1
            continue
        Comparison.objects.create(
            campaign=campaign,
            prompt=prompt,
            response_a=resp_a,
            response_b=resp_b,
            acquisition_rule=AcquisitionRule.IMPORTED,
            priority=row.priority,
            labels_required=campaign.labels_per_comparison,
        )
        created += 1
    return created


def _prompt_key(
    text: str, split: str, messages: list[dict[str, str]] | None
) -> tuple[str, str, str]:
    return (text, split, json.dumps(messages or None, sort_keys=True))


# --- Files ----------------------------------------------------------------------------------


def parse_prompt_bytes(data: bytes, fmt: str) -> list[PromptRow]:
    """Prompt rows of a JSONL, CSV or Parquet file; every bad row listed, none imported.

    Parquet rows take the same fields as JSONL objects (``prompt`` or ``messages``,
    optional ``split``, ``reference``, ``metadata``); line numbers count rows from 1.
    """
    if fmt != "parquet":
        return parse_prompt_file(decode_text(data), fmt)
    rows, errors = [], []
    for i, record in enumerate(read_parquet_records(data), start=1):
        record = {k: v for k, v in record.items() if v is not None}
        try:
            rows.append(_parse_prompt_record(record))
        except ValueError as exc:
            errors.append({"line": i, "error": str(exc)})
    return checked_rows(rows, errors, unit="row")


@transaction.atomic
def prompts_import_file(
    *, campaign: Campaign, data: bytes, fmt: str, progress: Progress = None
) -> int:
    """Import every prompt of a JSONL, CSV or Parquet file, or none of them."""
    rows = parse_prompt_bytes(data, fmt)
    return len(prompts_create(campaign=campaign, rows=rows, progress=progress))


def parse_pair_bytes(data: bytes, fmt: str) -> list[PairRow]:
    """Pair rows ``{prompt | messages, response_a, response_b, [split, reference, priority, gold,
    metadata]}`` of a JSONL, CSV or Parquet file; every bad row listed, none imported."""
    lines: list[int] = []
    errors: list[dict[str, Any]] = []
    records: list[Any] = []
    if fmt == "parquet":
        records = read_parquet_records(data)
        lines = list(range(1, len(records) + 1))
    elif fmt == "jsonl":
        for lineno, line in enumerate(decode_text(data).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
                lines.append(lineno)
            except json.JSONDecodeError as exc:
                errors.append({"line": lineno, "error": f"invalid JSON: {exc.msg}"})
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(decode_text(data), newline=""))
        try:
            missing = {"prompt", "response_a", "response_b"} - set(reader.fieldnames or [])
            if missing:
                raise InvalidInput(
                    f"The CSV lacks the column(s) {', '.join(sorted(missing))}.",
                    code="import_invalid",
                )
            for record in reader:
                if None in record:
                    errors.append({"line": reader.line_num, "error": "more fields than the header"})
                    continue
                records.append(record)
                lines.append(reader.line_num)
        except csv.Error as exc:
            raise InvalidInput(
                f"line {reader.line_num}: not readable as CSV: {exc}", code="import_invalid"
            ) from None
    else:
        raise InvalidInput(
            f"Unknown format {fmt!r}; use {', '.join(IMPORT_FORMATS)}.", code="invalid_format"
        )
    records = [
        {k: v for k, v in r.items() if v not in (None, "")} if isinstance(r, dict) else r
        for r in records
    ]
    unit = "row" if fmt == "parquet" else "line"
    return parse_pair_records(records, unit=unit, lines=lines, errors=errors)


def pairs_import_file(
    *, campaign: Campaign, data: bytes, fmt: str, progress: Progress = None
) -> int:
    """Queue comparisons of existing responses (a plain A/B campaign without a policy).

    All pairs or none: ``comparisons_import_pairs`` runs in one transaction.
    """
    pairs = parse_pair_bytes(data, fmt)
    created = comparisons_import_pairs(campaign=campaign, pairs=pairs)
    if progress:
        progress(created)
    return created
