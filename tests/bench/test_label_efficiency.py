"""The label-efficiency benchmark's pieces (bench/label_efficiency), on small synthetic pools."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.label_efficiency import cli, report, sim
from bench.label_efficiency.env import PoolEnv
from ml_worker.core.evaluation import exact_pair_win_probs

SMALL = sim.Setup(
    prompts_per_round=8,
    samples_per_prompt=4,
    reward={
        "num_particles": 8,
        "point_hidden": (32,),
        "point_lr": 3e-3,
        "gradient_steps": 4,
        "refit_epochs": 5,
    },
)


def _env(**kw):
    return PoolEnv.synthetic(
        prompts=kw.pop("prompts", 24), candidates=kw.pop("candidates", 6), dim=8, **kw
    )


def _run(env, name, budgets, seed=0, hp=None):
    return sim.run(
        env,
        sim.ALGORITHMS[name],
        hp or sim.Hparams(),
        budgets,
        seed=seed,
        train_idx=env.split("train"),
        eval_idx=env.split("eval"),
        setup=SMALL,
    )


def test_exact_win_rate_matches_brute_force_sampling():
    """The exact expected BT win rate equals a large Monte Carlo estimate of the same game:
    draw the new and the base policy's samples, then the oracle's Bernoulli choice."""
    env = _env(prompts=4, candidates=5)
    g = torch.Generator().manual_seed(0)
    probs_new = torch.softmax(torch.randn(4, 5, generator=g) * 2, dim=-1)
    probs_base = torch.softmax(torch.randn(4, 5, generator=g), dim=-1)
    exact = exact_pair_win_probs(env.rewards, probs_new, probs_base, temperature=env.temperature)

    n = 200_000
    wins = torch.zeros(4, dtype=torch.float64)
    for p in range(4):
        i = torch.multinomial(probs_new[p], n, replacement=True, generator=g)
        j = torch.multinomial(probs_base[p], n, replacement=True, generator=g)
        prompt = torch.full((n,), p)
        wins[p] = sim.judge_labels(env, prompt, i, j, seed=p, round_index=0).double().mean()
    # 4 standard errors of a proportion over 200k draws: about 0.0045
    assert torch.allclose(wins, exact, atol=0.0045)
    assert not torch.allclose(exact, torch.full_like(exact, 0.5), atol=0.01)  # a real signal


def test_win_rate_of_the_initial_policy_is_one_half():
    env = _env()
    res = _run(env, "offline", [8])  # offline with a single tiny budget: check only rate shape
    assert 0.0 < res[0]["win_rate"] < 1.0
    probs = torch.full((3, 6), 1 / 6)
    same = exact_pair_win_probs(env.rewards[:3], probs, probs, temperature=1.0)
    assert torch.allclose(same, torch.full((3,), 0.5, dtype=torch.float64))


@pytest.mark.parametrize("name", ["offline", "online"])
def test_budgets_are_counted_in_labels_not_rounds(name, monkeypatch):
    """B = 8 prompts per round: 10 labels take 2 rounds (8 + 2), 25 take 2 more (8 + 7).
    Online learns from each round's labels, offline refits on all labels at each budget."""
    env = _env()
    learned = []
    for method in ("step", "refit"):
        real = getattr(sim.ENNTrainer, method)

        def counting(self, fa, fb, targets, _real=real, **kw):
            learned.append(len(targets))
            return _real(self, fa, fb, targets, **kw)

        monkeypatch.setattr(sim.ENNTrainer, method, counting)
    res = _run(env, name, [10, 25])
    assert [r["labels"] for r in res] == [10, 25]
    assert [r["rounds"] for r in res] == [2, 4]
    assert learned == ([8, 2, 8, 7] if name == "online" else [10, 25])


def test_a_label_means_the_same_whichever_side_its_pair_was_shown_on():
    """Swapping the order a pair is shown in never changes what a label means: at
    temperature 0 the better response always wins, whichever side it was shown on."""
    env = _env()
    env.temperature = 0.0
    prompt = torch.arange(6).repeat(30)
    a = torch.randint(0, 6, (180,), generator=torch.Generator().manual_seed(1))
    b = (a + 1) % 6
    targets = sim.judge_labels(env, prompt, a, b, seed=5, round_index=2)
    better = (env.rewards[prompt, a] > env.rewards[prompt, b]).float()
    assert torch.equal(targets, better)


@pytest.mark.parametrize("name", list(sim.ALGORITHMS))
def test_a_seed_reproduces_identical_results(name):
    env = _env()
    first = _run(env, name, [16, 32], seed=3)
    again = _run(env, name, [16, 32], seed=3)
    assert first == again
    other = _run(env, name, [16, 32], seed=4)
    assert other != first


def test_online_learning_beats_the_initial_policy_on_a_learnable_pool():
    env = PoolEnv.synthetic(prompts=40, candidates=8, dim=8, seed=1)
    res = _run(env, "online", [256], hp=sim.Hparams(policy_lr=0.1, nudge=0.1))
    assert res[-1]["win_rate"] > 0.55


def test_distinct_marks_repeated_texts_as_invalid_pairs():
    env = _env(prompts=2, candidates=4)
    env.pool = [["a", "b", " a", "c"], ["x", "y", "z", "w"]]
    valid = env.distinct(torch.tensor([0, 1]), torch.tensor([[0, 2, 1, 1], [3, 3, 0, 1]]))
    assert valid.tolist() == [[True, False, True, False], [True, False, True, True]]


def test_labels_to_reach_interpolates_in_log_labels():
    curve = [{"labels": 256, "win_rate": 0.5}, {"labels": 1024, "win_rate": 0.7}]
    assert report.labels_to_reach(curve, 0.6) == pytest.approx(512)
    assert report.labels_to_reach(curve, 0.45) == 256
    assert report.labels_to_reach(curve, 0.71) is None


def test_match_table_ratio_is_offline_labels_over_algorithm_labels():
    offline = [[{"labels": 256, "win_rate": 0.5}, {"labels": 4096, "win_rate": 0.6}]]
    fast = [[{"labels": 256, "win_rate": 0.6}, {"labels": 4096, "win_rate": 0.7}]]
    table = report.match_table({"offline": offline, "infomax": fast})
    assert table["target_win_rate"] == 0.6
    assert table["algorithms"]["infomax"]["ratio_mean"] == pytest.approx(16.0)
    assert table["algorithms"]["offline"]["ratio_mean"] == pytest.approx(1.0)


def test_power_law_fit_recovers_known_parameters():
    a, b = 100.0, 0.3
    curve = [
        {"labels": n, "win_rate": 1 - 0.5 * (n / a) ** (-b)} for n in (256, 512, 1024, 4096, 16384)
    ]
    fit = report.fit_power_law(curve)
    assert fit["a"] == pytest.approx(a, rel=1e-3)
    assert fit["b"] == pytest.approx(b, rel=1e-3)


def test_cli_writes_results_and_resumes_from_its_run_cache(tmp_path, capsys):
    args = [
        "--synthetic",
        "--env",
        "held_out",
        "--no-tune",
        "--seeds",
        "2",
        "--min-labels",
        "16",
        "--max-labels",
        "32",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(args) == 0
    out = tmp_path / "held_out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held_out"]  # only the env asked for
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == set(cli.DEFAULT_ALGORITHMS)
    assert results["budgets"] == [16, 32]
    assert all(len(curves) == 2 for curves in results["runs"].values())
    for ext in ("png", "svg", "md"):
        name = "table.md" if ext == "md" else f"win_rate.{ext}"
        assert (out / name).stat().st_size > 0
    assert "offline" in capsys.readouterr().out
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2 * len(cli.DEFAULT_ALGORITHMS)  # one line per (algorithm, seed)
    assert cli.main(args) == 0  # every run comes from the cache: nothing appended
    assert (out / "runs.jsonl").read_text().splitlines() == lines
    again = json.loads((out / "results.json").read_text())
    assert again["runs"] == results["runs"]
    for name, fit in again["fit"].items():
        assert fit["b"] == pytest.approx(results["fit"][name]["b"], rel=1e-9, abs=1e-12)
    assert all(math.isfinite(f["b"]) for f in again["fit"].values())


def test_cli_runs_in_worker_processes_give_the_results_of_one_process(tmp_path):
    """--jobs 2 (spawned workers, one thread each) reproduces --jobs 1 exactly, tuning included."""
    args = ["--synthetic", "--env", "in_distribution", "--seeds", "2"]
    args += ["--min-labels", "16", "--max-labels", "32"]
    args += ["--tune-max-labels", "16", "--algorithms", "offline,infomax"]
    assert cli.main([*args, "--jobs", "1", "--out", str(tmp_path / "one")]) == 0
    assert cli.main([*args, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    one, two = (
        json.loads((tmp_path / d / "in_distribution" / "results.json").read_text())
        for d in ("one", "two")
    )
    assert two["runs"] == one["runs"]
    assert two["chosen"] == one["chosen"]
    assert two["tuning"]["grid"] == one["tuning"]["grid"]
    one_runs, two_runs = (
        (tmp_path / d / "in_distribution" / "runs.jsonl").read_text().splitlines()
        for d in ("one", "two")
    )
    assert len(two_runs) == len(one_runs)
    # at least the starting grid of infomax on 2 seeds, then 2 seeds of each algorithm
    assert len(two_runs) >= 2 * len(cli.tuning_grid("infomax", cli.start_window("infomax"))) + 4


def test_the_command_line_entry_point_runs_jobs_in_worker_processes(tmp_path):
    """`python -m bench.label_efficiency --jobs 2`, as a user types it: the spawned workers must
    import the jobs' code from a module other than the package's `__main__`."""
    root = Path(__file__).resolve().parents[2]
    args = ["--synthetic", "--env", "reference_free", "--seeds", "1"]
    args += ["--min-labels", "16", "--max-labels", "16", "--no-tune"]
    args += ["--algorithms", "offline,online", "--jobs", "2", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.label_efficiency", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "reference_free" / "results.json").read_text())
    assert set(results["runs"]) == {"offline", "online"}


def test_cli_refuses_an_unknown_algorithm(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--synthetic", "--algorithms", "offline,magic", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown algorithm(s) ['magic']" in capsys.readouterr().err


def test_principal_components_keep_the_largest_variance_directions():
    from bench.label_efficiency.env import principal_components

    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([5.0, 3.0, 1.0, 0.1, 0.01])
    x = torch.randn(400, 5, generator=g) * scales + 7.0
    y = principal_components(x, 2)
    assert y.shape == (400, 2)
    assert torch.allclose(y.mean(dim=0), torch.zeros(2), atol=1e-4)
    var = y.var(dim=0)
    assert var[0] > var[1] > 0.5 * scales[1] ** 2
    # two components hold nearly all of the variance of the data
    assert var.sum() / x.var(dim=0).sum() > 0.95  # (25 + 9) / 35 in expectation
