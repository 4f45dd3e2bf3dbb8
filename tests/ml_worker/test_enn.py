from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_worker.core.enn import (
    ENNConfig,
    ENNRewardModel,
    ENNTrainer,
    ReplayBuffer,
    bt_loss,
    choices_to_targets,
    overhead_percent,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: threads only add OpenMP spin-waits, which on a loaded 2-core
    machine make each op 10x slower. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


D = 12


def small_config(**overrides) -> ENNConfig:
    base = dict(
        feature_dim=D,
        num_particles=7,
        prior_hidden=(5, 4),
        diff_hidden=(8, 6),
        point_hidden=(16, 16),
        replay_size=50,
        replay_batch=8,
        refit_epochs=3,
        refit_batch_size=16,
        seed=3,
    )
    base.update(overrides)
    return ENNConfig(**base)


def labels(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    fa = torch.randn(n, D, generator=g)
    fb = torch.randn(n, D, generator=g)
    targets = torch.tensor([1.0, 0.0, 0.5])[torch.randint(3, (n,), generator=g)]
    return fa, fb, targets


def log_likelihood(r_a: torch.Tensor, r_b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BT log-likelihood of the labels, per particle for [M, N] inputs."""
    return -bt_loss(r_a, r_b, targets)


@torch.no_grad()
def distance_to_init(model: ENNRewardModel, prefix: str) -> float:
    return float(
        sum(
            ((p - model.initial(n)) ** 2).sum()
            for n, p in model.named_parameters()
            if n.startswith(prefix)
        )
    )


# ---- labels and loss -------------------------------------------------------------------------


def test_it_maps_choices_to_targets_and_masks_both_bad() -> None:
    targets, mask = choices_to_targets(["A", "B", "tie", "both_bad"])
    assert targets.tolist() == [1.0, 0.0, 0.5, 0.5]
    assert mask.tolist() == [True, True, True, False]


def test_it_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="unknown choice"):
        choices_to_targets(["A", "a"])


@settings(deadline=None)
@given(diff=st.floats(-20, 20, allow_nan=False))
def test_it_counts_a_tie_as_half_a_win_each_way(diff: float) -> None:
    r_a, r_b = torch.tensor([diff]), torch.tensor([0.0])
    tie = bt_loss(r_a, r_b, torch.tensor([0.5]))
    win, loss = bt_loss(r_a, r_b, torch.tensor([1.0])), bt_loss(r_a, r_b, torch.tensor([0.0]))
    torch.testing.assert_close(tie, (win + loss) / 2)


def test_it_is_indifferent_to_a_tie_between_equal_rewards() -> None:
    logit = torch.zeros(1, requires_grad=True)
    bt_loss(logit, torch.zeros(1), torch.tensor([0.5])).backward()
    assert logit.grad is not None and logit.grad.abs().item() < 1e-7
    logit.grad = None
    bt_loss(logit, torch.zeros(1), torch.tensor([1.0])).backward()
    assert logit.grad.item() < 0  # a win pushes r_a up


def test_it_weights_labels_per_particle() -> None:
    r_a, r_b = torch.randn(3, 4), torch.randn(3, 4)
    t = torch.tensor([1.0, 0.0, 0.5, 1.0])
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    loss = bt_loss(r_a, r_b, t, w)
    assert loss.shape == (3,)
    assert loss[1] == 0
    expected = 2 * F.binary_cross_entropy_with_logits(r_a[2, 0] - r_b[2, 0], t[0]) / 4
    torch.testing.assert_close(loss[2], expected)


# ---- model -----------------------------------------------------------------------------------


def test_batched_particles_equal_a_per_particle_loop() -> None:
    model = ENNRewardModel(small_config())
    x = torch.randn(9, D)
    batched = model.particles(x)
    xs = F.layer_norm(x, (D,))
    expected = []
    for m in range(model.config.num_particles):
        outs = []
        for prefix, n in (("diff", model.num_diff_layers), ("prior", model.num_prior_layers)):
            h = xs
            for i in range(n):
                w, b = getattr(model, f"{prefix}_w{i}")[m], getattr(model, f"{prefix}_b{i}")[m]
                h = h @ w + b
                if i < n - 1:
                    h = torch.relu(h)
            outs.append(h.squeeze(-1))
        expected.append(outs[0] + model.config.prior_scale * outs[1])
    torch.testing.assert_close(batched, torch.stack(expected), rtol=1e-5, atol=1e-5)
    assert batched.shape == (7, 9)


def test_it_has_diverse_particles_and_frozen_priors() -> None:
    model = ENNRewardModel(small_config(num_particles=20))
    rewards = model.particles(torch.randn(30, D))
    assert rewards.std(dim=0).min() > 0.05
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith("prior") for n in names)
    assert all(isinstance(getattr(model, f"prior_w{i}"), torch.Tensor) for i in range(3))


def test_prior_scale_zero_leaves_only_the_differential_networks() -> None:
    a = ENNRewardModel(small_config(prior_scale=0.0))
    b = ENNRewardModel(small_config(prior_scale=2.0))
    x = torch.randn(5, D)
    diff_only = a.particles(x)
    # Same seed: same differential weights, so the difference is exactly 2 x prior.
    prior = (b.particles(x) - diff_only) / 2.0
    torch.testing.assert_close(
        ENNRewardModel(small_config(prior_scale=1.0)).particles(x), diff_only + prior
    )


def test_it_rejects_features_of_the_wrong_width() -> None:
    model = ENNRewardModel(small_config())
    with pytest.raises(ValueError, match="features must be"):
        model.point(torch.randn(3, D + 1))


def test_it_counts_head_parameters_and_overhead() -> None:
    cfg = small_config()
    model = ENNRewardModel(cfg)

    def mlp(dims: tuple[int, ...]) -> int:
        return sum(i * o + o for i, o in zip(dims[:-1], dims[1:], strict=True))

    point = mlp((D, 16, 16, 1))
    diff = cfg.num_particles * mlp((D, 8, 6, 1))
    prior = cfg.num_particles * mlp((D, 5, 4, 1))
    assert model.parameter_count() == point + diff + prior
    assert model.parameter_count(trainable_only=True) == point + diff
    assert model.parameter_count(trainable_only=True) == sum(p.numel() for p in model.parameters())
    assert overhead_percent(model.parameter_count(), 10 * model.parameter_count()) == 10.0
    with pytest.raises(ValueError):
        overhead_percent(5, 0)


def test_default_heads_on_smollm2_width_stay_near_five_percent() -> None:
    model = ENNRewardModel(ENNConfig(feature_dim=576))
    # SmolLM2-135M has about 134.5M parameters (counted by bench/ml_core.py from its config).
    assert 4.0 < overhead_percent(model.parameter_count(), 134_515_008) < 7.0


# ---- training --------------------------------------------------------------------------------


def test_a_step_raises_the_likelihood_of_the_labels_it_saw() -> None:
    trainer = ENNTrainer(small_config(lr=1e-2, point_lr=1e-2))
    fa, fb, t = labels(32)
    t = torch.where(t == 0.5, 1.0, t)  # decisive labels: the likelihood can always improve
    model = trainer.model
    with torch.no_grad():
        point_before = log_likelihood(model.point(fa), model.point(fb), t)
        parts_before = log_likelihood(model.particles(fa), model.particles(fb), t)
    trainer.step(fa, fb, t)
    with torch.no_grad():
        point_after = log_likelihood(model.point(fa), model.point(fb), t)
        parts_after = log_likelihood(model.particles(fa), model.particles(fb), t)
    assert point_after > point_before
    assert bool((parts_after > parts_before).all()), (parts_before, parts_after)


def test_repeated_steps_fit_the_labels() -> None:
    trainer = ENNTrainer(small_config(lr=3e-2, point_lr=1e-2, replay_batch=0))
    fa, fb, t = labels(16, seed=1)
    t = torch.where(t == 0.5, 0.0, t)
    for _ in range(25):
        trainer.step(fa, fb, t)
    with torch.no_grad():
        point_prob = torch.sigmoid(trainer.model.point(fa) - trainer.model.point(fb))
        part_prob = torch.sigmoid(trainer.model.particles(fa) - trainer.model.particles(fb))
    assert ((point_prob > 0.5) == (t == 1.0)).all()
    assert ((part_prob.mean(0) > 0.5) == (t == 1.0)).all()


def test_ties_pull_rewards_together() -> None:
    trainer = ENNTrainer(small_config(lr=1e-2, point_lr=1e-2, l2_weight=0.0, replay_batch=0))
    fa, fb, _ = labels(8, seed=2)
    model = trainer.model
    with torch.no_grad():
        gap_before = (model.point(fa) - model.point(fb)).abs().mean()
    for _ in range(30):
        trainer.step(fa, fb, torch.full((8,), 0.5))
    with torch.no_grad():
        gap_after = (model.point(fa) - model.point(fb)).abs().mean()
    assert gap_after < 0.5 * gap_before


def test_l2_pulls_weights_toward_their_initial_values() -> None:
    def perturbed_trainer(l2: float) -> ENNTrainer:
        trainer = ENNTrainer(small_config(l2_weight=l2, lr=1e-2, point_lr=1e-2, replay_batch=0))
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.add_(0.5)
        return trainer

    # A tie between identical features has zero data gradient: only the L2 term acts.
    x = torch.randn(4, D)
    ties = torch.full((4,), 0.5)
    pulled, free = perturbed_trainer(1.0), perturbed_trainer(0.0)
    before = {k: distance_to_init(pulled.model, k) for k in ("point_", "diff_")}
    for _ in range(10):
        pulled.step(x, x, ties)
        free.step(x, x, ties)
    for prefix in ("point_", "diff_"):
        assert distance_to_init(pulled.model, prefix) < 0.9 * before[prefix]
        assert distance_to_init(free.model, prefix) == pytest.approx(before[prefix])


def test_a_mask_drops_labels_like_filtering_them_out() -> None:
    fa, fb, t = labels(10, seed=4)
    mask = torch.tensor([True, False] * 5)
    masked, filtered = ENNTrainer(small_config()), ENNTrainer(small_config())
    masked.step(fa, fb, t, mask)
    filtered.step(fa[mask], fb[mask], t[mask])
    for p, q in zip(masked.model.parameters(), filtered.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert len(masked.replay) == 5


def test_it_rejects_bad_targets_and_shapes() -> None:
    trainer = ENNTrainer(small_config())
    fa, fb, _ = labels(3)
    with pytest.raises(ValueError, match="targets must be"):
        trainer.step(fa, fb, torch.tensor([1.0, 0.3, 0.0]))
    with pytest.raises(ValueError, match="features_a and features_b"):
        trainer.step(fa, fb[:2], torch.ones(3))


@pytest.mark.parametrize("kind", ["exponential", "bernoulli"])
def test_bootstrap_weights_have_mean_one_and_differ_across_particles(kind: str) -> None:
    trainer = ENNTrainer(small_config(bootstrap=kind, bootstrap_prob=0.5, num_particles=50))
    w = trainer.bootstrap_weights(400)
    assert w.shape == (50, 400)
    assert (w >= 0).all()
    assert w.mean().item() == pytest.approx(1.0, abs=0.05)
    assert not torch.equal(w[0], w[1])
    if kind == "bernoulli":
        assert set(w.unique().tolist()) <= {0.0, 2.0}


def test_replay_keeps_each_labels_bootstrap_weights() -> None:
    trainer = ENNTrainer(small_config(bootstrap="bernoulli", replay_size=100))
    fa, fb, t = labels(6)
    trainer.step(fa, fb, t)
    stored = trainer.replay.weights
    assert stored.shape == (7, 6)
    assert set(stored.unique().tolist()) <= {0.0, 2.0}


# ---- replay buffer ---------------------------------------------------------------------------


def test_replay_buffer_is_bounded_and_keeps_old_labels() -> None:
    buf = ReplayBuffer(capacity=10, feature_dim=1, num_particles=2)
    gen = torch.Generator().manual_seed(0)
    for start in range(0, 100, 7):
        n = min(7, 100 - start)
        ids = torch.arange(start, start + n, dtype=torch.float32)
        buf.add(ids[:, None], ids[:, None], torch.ones(n), torch.ones(2, n), gen)
        assert len(buf) <= 10
    assert len(buf) == 10 and buf.seen == 100
    stored = buf.features_a[:, 0]
    assert len(set(stored.tolist())) == 10  # no duplicates
    # Reservoir, not FIFO: labels from before the last ten survive.
    assert stored.min() < 90
    fa, _, _, _ = buf.sample(4, torch.Generator().manual_seed(1))
    assert fa.shape == (4, 1) and set(fa[:, 0].tolist()) <= set(stored.tolist())
    assert buf.sample(50, gen)[0].shape == (10, 1)


def test_replay_sampling_is_seeded() -> None:
    def run() -> torch.Tensor:
        trainer = ENNTrainer(small_config(replay_size=20, replay_batch=5))
        for seed in range(5):
            trainer.step(*labels(6, seed=seed))
        return trainer.replay.features_a

    assert torch.equal(run(), run())


def test_steps_mix_in_replayed_labels() -> None:
    trainer = ENNTrainer(small_config(replay_size=50, replay_batch=8))
    first = trainer.step(*labels(5, seed=0))
    second = trainer.step(*labels(5, seed=1))
    assert first["n_replay"] == 0 and second["n_replay"] == 5
    third = trainer.step(*labels(5, seed=2))
    assert third["n_replay"] == 8


def test_zero_capacity_replay_stays_empty() -> None:
    trainer = ENNTrainer(small_config(replay_size=0))
    trainer.step(*labels(5))
    assert len(trainer.replay) == 0 and trainer.step(*labels(5))["n_replay"] == 0


# ---- refit -----------------------------------------------------------------------------------


def test_refit_starts_from_the_initial_weights_then_fits() -> None:
    history, fresh = ENNTrainer(small_config()), ENNTrainer(small_config())
    for seed in range(4):
        history.step(*labels(16, seed=10 + seed))
    assert distance_to_init(history.model, "diff_") > 0
    data = labels(40, seed=99)
    x = torch.randn(6, D)
    with torch.no_grad():
        loss_at_init = fresh.loss(*data)[1]
    m_hist = history.refit(*data)
    m_fresh = fresh.refit(*data)
    # The history is forgotten: both refits give the same model.
    for p, q in zip(history.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(history.model.particles(x), fresh.model.particles(x))
    assert m_hist["loss_full"] == m_fresh["loss_full"]
    assert m_fresh["loss_full"] < loss_at_init["loss"]
    assert len(fresh.replay) == 40


def test_refit_with_zero_epochs_is_the_initial_model() -> None:
    trainer = ENNTrainer(small_config())
    trainer.step(*labels(16))
    trainer.refit(*labels(16, seed=5), epochs=0)
    assert distance_to_init(trainer.model, "") == 0.0


# ---- persistence -----------------------------------------------------------------------------


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 1000), bootstrap=st.sampled_from(["none", "exponential"]))
def test_model_save_load_round_trip_gives_identical_outputs(
    tmp_path_factory: pytest.TempPathFactory, seed: int, bootstrap: str
) -> None:
    trainer = ENNTrainer(small_config(seed=seed, bootstrap=bootstrap))
    trainer.step(*labels(8, seed=seed))
    path = tmp_path_factory.mktemp("enn")
    trainer.model.save(path)
    loaded = ENNRewardModel.load(path)
    assert loaded.config == trainer.model.config
    x = torch.randn(5, D)
    assert torch.equal(loaded.point(x), trainer.model.point(x))
    assert torch.equal(loaded.particles(x), trainer.model.particles(x))
    for name, _ in trainer.model.named_parameters():  # the L2 anchor survives too
        assert torch.equal(loaded.initial(name), trainer.model.initial(name))


def test_trainer_save_load_resumes_exactly(tmp_path) -> None:
    original = ENNTrainer(small_config(bootstrap="bernoulli"))
    for seed in range(3):
        original.step(*labels(8, seed=seed))
    original.save(tmp_path / "v1")
    resumed = ENNTrainer.load(tmp_path / "v1")
    assert resumed.steps == original.steps and len(resumed.replay) == len(original.replay)
    batch = labels(8, seed=50)
    original.step(*batch)
    resumed.step(*batch)
    for p, q in zip(original.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [
        "config.json",
        "model.safetensors",
        "trainer.pt",
    ]


def test_config_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown ENNConfig fields"):
        ENNConfig.from_dict({"feature_dim": 3, "prior_scal": 1.0})
    with pytest.raises(ValueError):
        ENNConfig(feature_dim=3, bootstrap="poisson")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ENNConfig(feature_dim=0)


def test_a_step_without_new_labels_changes_nothing() -> None:
    trainer = ENNTrainer(small_config())
    trainer.step(*labels(6))
    before = [p.clone() for p in trainer.model.parameters()]
    fa, fb, t = labels(2, seed=8)
    metrics = trainer.step(fa, fb, t, torch.tensor([False, False]))
    assert metrics["n_new"] == 0 and trainer.steps == 1 and len(trainer.replay) == 6
    for p, q in zip(before, trainer.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_particles_agree_more_on_labeled_pairs_than_on_unseen_ones() -> None:
    # The epistemic part: training shrinks the particles' disagreement about P(a > b) where
    # there are labels, much less elsewhere.
    trainer = ENNTrainer(
        small_config(num_particles=30, lr=1e-2, l2_weight=1e-4, replay_batch=0, seed=5)
    )
    g = torch.Generator().manual_seed(5)
    w = torch.randn(D, generator=g)
    fa, fb = torch.randn(24, D, generator=g), torch.randn(24, D, generator=g)
    t = (fa @ w > fb @ w).float()
    ua, ub = torch.randn(24, D, generator=g), torch.randn(24, D, generator=g)

    def disagreement(xa: torch.Tensor, xb: torch.Tensor) -> float:
        with torch.no_grad():
            p = torch.sigmoid(trainer.model.particles(xa) - trainer.model.particles(xb))
        return float(p.var(dim=0).mean())

    seen_before, unseen_before = disagreement(fa, fb), disagreement(ua, ub)
    for _ in range(40):
        trainer.step(fa, fb, t)
    seen_after, unseen_after = disagreement(fa, fb), disagreement(ua, ub)
    assert seen_after < 0.5 * seen_before
    assert seen_after / seen_before < unseen_after / unseen_before


# ---- rater weights ---------------------------------------------------------------------------


def test_zero_label_weights_give_the_loss_and_gradients_of_leaving_those_labels_out() -> None:
    fa, fb, t = labels(10, seed=7)
    keep = torch.tensor([True, False] * 5)
    trainer = ENNTrainer(small_config())

    def loss_and_grads(*args, **kwargs):
        trainer.model.zero_grad(set_to_none=True)
        total, _ = trainer.loss(*args, **kwargs)
        total.backward()
        return total.detach(), [p.grad.clone() for p in trainer.model.point_parameters()]

    weighted = loss_and_grads(fa, fb, t, label_weights=keep.float())
    filtered = loss_and_grads(fa[keep], fb[keep], t[keep])
    assert torch.allclose(weighted[0], filtered[0], atol=1e-5)
    for g, h in zip(weighted[1], filtered[1], strict=True):
        assert torch.allclose(g, h, atol=1e-6)


def test_weights_let_the_reliable_rater_win_a_conflict() -> None:
    """The same pairs labeled both ways: by a reliable rater (A) and an unreliable one (B).
    Unweighted, the model is indifferent; weighted, it follows the reliable rater."""
    g = torch.Generator().manual_seed(0)
    fa, fb = torch.randn(40, D, generator=g), torch.randn(40, D, generator=g)
    fa2, fb2 = torch.cat([fa, fa]), torch.cat([fb, fb])
    t = torch.cat([torch.ones(40), torch.zeros(40)])
    w = torch.cat([torch.full((40,), 0.9), torch.full((40,), 0.1)])

    def p_a(trainer: ENNTrainer) -> float:
        with torch.no_grad():
            return torch.sigmoid(trainer.model.point(fa) - trainer.model.point(fb)).mean().item()

    fast = small_config(point_lr=1e-2, lr=1e-2)
    plain, weighted = ENNTrainer(fast), ENNTrainer(fast)
    plain.refit(fa2, fb2, t, epochs=40)
    weighted.refit(fa2, fb2, t, epochs=40, label_weights=w)
    assert abs(p_a(plain) - 0.5) < 0.05
    assert p_a(weighted) > 0.75


def test_replay_keeps_label_weights_across_save_and_load(tmp_path) -> None:
    trainer = ENNTrainer(small_config(replay_size=100, rater_weighting="weighted"))
    fa, fb, t = labels(6)
    trainer.step(fa, fb, t, label_weights=torch.tensor([0.0, 0.5, 1.0, 0.2, 0.3, 0.9]))
    trainer.step(*labels(4, seed=1))  # unweighted labels count 1
    expected = torch.tensor([0.0, 0.5, 1.0, 0.2, 0.3, 0.9, 1.0, 1.0, 1.0, 1.0])
    assert torch.allclose(trainer.replay.label_weights, expected)
    trainer.save(tmp_path)
    loaded = ENNTrainer.load(tmp_path)
    assert torch.allclose(loaded.replay.label_weights, expected)
    assert loaded.config.rater_weighting == "weighted"


def test_it_rejects_bad_label_weights_and_weighting_modes() -> None:
    trainer = ENNTrainer(small_config())
    fa, fb, t = labels(3)
    with pytest.raises(ValueError, match="label_weights must be \\[3\\]"):
        trainer.step(fa, fb, t, label_weights=torch.ones(2))
    with pytest.raises(ValueError, match="finite and >= 0"):
        trainer.step(fa, fb, t, label_weights=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="rater_weighting"):
        small_config(rater_weighting="on")
