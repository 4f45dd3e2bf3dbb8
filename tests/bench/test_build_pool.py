"""The pool builder's resumable output file (bench/build_pool.py): what a restart keeps."""

from __future__ import annotations

import json

from bench.build_pool import read_done


def _row(pid: str) -> bytes:
    return (json.dumps({"prompt_id": pid, "responses": []}) + "\n").encode()


def test_a_truncated_tail_is_cut_off_and_a_damaged_middle_line_skipped(tmp_path):
    path = tmp_path / "pool.jsonl"
    # a: fine; then a row cut short by a killed shard with another shard's row appended to
    # it (both lost); c: fine; then a tail cut short by a kill.
    damaged = _row("b")[:20] + _row("x")
    path.write_bytes(_row("a") + damaged + _row("c") + _row("d")[:15])

    assert set(read_done(path, repair=False)) == {"a", "c"}
    assert path.read_bytes().endswith(_row("d")[:15])  # without repair nothing is written

    assert set(read_done(path, repair=True)) == {"a", "c"}
    assert path.read_bytes() == _row("a") + damaged + _row("c")  # only the tail was cut
