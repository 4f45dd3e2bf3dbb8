"""The raters benchmark at a tiny size: the crowd labels through the services, every mode
trains, the summary and the table come out, and the label-efficiency pool is refused (not
computed) when its features are missing."""

from __future__ import annotations

import pytest
import torch

from bench.raters import cli
from bench.raters.crowd import CROWD, make_crowd
from bench.raters.sim import MODES, BenchSetup, run_seed, spearman
from rlhf_platform.labeling.models import Label
from rlhf_platform.raters.models import RaterExclusion

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_crowd_is_the_issues_crowd():
    kinds = [r.kind for r in make_crowd()]
    assert len(kinds) == 20 and {k: kinds.count(k) for k, *_ in CROWD} == {
        "careful": 10,
        "noisy": 4,
        "random": 3,
        "first": 2,
        "longer": 1,
    }


def test_a_tiny_run_labels_through_the_services_and_reports_every_mode():
    env = cli.synthetic_env(prompts=16, candidates=5, dim=8)
    setup = BenchSetup(gold_pairs=4, gold_rate=0.1, refit_every=20, policy_steps=2)
    run = run_seed(env, seed=0, budgets=[40, 80], setup=setup)
    assert [b["labels"] for b in run["budgets"]] == [40, 80]
    for b in run["budgets"]:
        assert set(b["modes"]) == set(MODES)
        for m in b["modes"].values():
            assert 0 <= m["rm_accuracy"] <= 1 and 0 <= m["win_rate"] <= 1
    # Overlap 2: no comparison was labeled by more than two raters, gold aside.
    per = {}
    for cid in Label.objects.filter(comparison__gold__isnull=True).values_list(
        "comparison_id", flat=True
    ):
        per[cid] = per.get(cid, 0) + 1
    assert max(per.values()) <= 2
    assert len(run["raters"]) == 20
    excluded = set(RaterExclusion.objects.values_list("annotator__username", flat=True))
    assert {n.split("-")[0] for n in excluded} == set(run["budgets"][-1]["flagged"])
    summary = cli.summarize([run, run | {"seed": 1}])
    assert set(summary["labels_needed"]) == set(MODES)
    text = cli.table(summary, {"environment": "synthetic", "seeds": 2, "wall_s": 1.0})
    assert "Weighted / unweighted" in text and "longer00" in text


def test_the_pool_run_refuses_to_compute_features(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "POOL_FEATURES", tmp_path / "missing.npz")
    monkeypatch.setattr(cli, "ROOT", tmp_path)
    assert cli.main(["--seeds", "1"]) == 2
    assert "does not compute" in capsys.readouterr().err


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert cli.labels_needed([(100, 0.5), (200, 0.7)], 0.6) == pytest.approx(141.4, abs=0.1)
    assert cli.labels_needed([(100, 0.5)], 0.6) is None


def test_report_re_renders_the_committed_results(tmp_path, capsys):
    import shutil

    src = cli.DEFAULT_OUT / "synthetic" / "results.json"
    shutil.copy(src, tmp_path / "results.json")
    assert cli.main(["--report", str(tmp_path / "results.json")]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "Weighted / unweighted" in table and table == (src.parent / "table.md").read_text()
