"""The real-LM experiment's command (`bench/label_efficiency/lm.py`) in its CPU form, at a
small size: a tiny random LM and the oracle's hashing encoder instead of SmolLM2 and MiniLM
(those load and run in tests/ml_worker/test_policies_lm.py), through the platform's rounds."""

import json
import subprocess
import sys
from pathlib import Path

from bench.label_efficiency import lm

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--backend", "tiny", "--judge-encoder", "hashing", "--rounds", "2"]
SMALL += ["--prompts-per-round", "2", "--responses-per-prompt", "2", "--max-new-tokens", "8"]
SMALL += ["--eval-prompts", "2", "--eval-every", "2", "--arms", "infomax,infomax_no_nudge"]


def _run(tmp_path: Path) -> subprocess.CompletedProcess:
    args = [*SMALL, "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    return subprocess.run(
        [sys.executable, "-m", "bench.label_efficiency.lm", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"HF_HUB_OFFLINE": "1", "RLHF_DEVICE": "cpu", "PATH": "/usr/bin:/bin"},
    )


def test_the_paper_sizes_come_from_one_flag_and_each_can_be_overridden():
    paper = lm.parse_args(["--paper"])
    assert (paper.prompts_per_round, paper.responses_per_prompt, paper.rounds) == (64, 16, 64)
    assert paper.rounds * paper.prompts_per_round == 4096  # thousands of labels per arm
    longer = lm.parse_args(["--paper", "--rounds", "128"])
    assert (longer.rounds, longer.prompts_per_round) == (128, 64)
    assert lm.parse_args([]).prompts_per_round == 8
    # A paper-size run keeps its own state and results, beside the CPU form's.
    assert (paper.name, paper.work.name) == ("lm_paper", "lm_paper")
    assert (lm.parse_args([]).name, lm.parse_args([]).work.name) == ("lm_short", "lm_short")


def test_the_cpu_form_runs_every_arm_through_the_platform_and_resumes(tmp_path):
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "lm_short.json").read_text())
    assert results["device"].startswith("cpu")
    assert set(results["arms"]) == {"infomax", "infomax_no_nudge"}
    for arm in results["arms"].values():
        assert arm["rounds_done"] == 2 and arm["rounds_failed"] == []
        assert [ev["labels"] for ev in arm["evaluations"]] == [4]  # evaluated after round 2
        assert 0.0 <= arm["evaluations"][0]["win_rate"] <= 1.0
        assert [row["round"] for row in arm["samples"]] == [0, 1]
        assert all(0 < row["distinct_share"] <= 1 for row in arm["samples"])
        assert arm["tanked"] == (arm["evaluations"][-1]["ci_high"] < 0.5)
    table = (tmp_path / "out" / "lm_short.md").read_text()
    assert "| infomax_no_nudge | 0.0 | 4 |" in table

    again = _run(tmp_path)  # everything is done: the second run resumes and runs no round
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((tmp_path / "out" / "lm_short.json").read_text())
    for name, arm in resumed["arms"].items():
        assert arm["evaluations"] == results["arms"][name]["evaluations"]
        assert arm["rounds_done"] == 2
