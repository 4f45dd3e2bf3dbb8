"""The one definition of an answer (ml_worker.core.choice) and every consumer agreeing with it:
the database field, the API's enum, the labeling page, the judges, the reward model's targets,
the analytics and the benchmarks' simulated annotators (docs/choice.md)."""

from __future__ import annotations

import pytest
import torch

from ml_worker.core.choice import (
    CHOICES,
    DECISIVE,
    JUDGE_CHOICES,
    TRAINED,
    Choice,
    Preference,
    share_of_a,
)


def test_the_four_values_and_their_meaning():
    assert [c.value for c in CHOICES] == ["A", "B", "tie", "both_bad"]
    assert {c: c.target for c in Choice} == {
        Choice.A: 1.0,
        Choice.B: 0.0,
        Choice.TIE: 0.5,
        Choice.BOTH_BAD: None,
    }
    assert {c: c.preference for c in Choice} == {
        Choice.A: Preference.A,
        Choice.B: Preference.B,
        Choice.TIE: Preference.NONE,
        Choice.BOTH_BAD: Preference.NONE,
    }
    assert DECISIVE == (Choice.A, Choice.B)
    assert TRAINED == (Choice.A, Choice.B, Choice.TIE)
    assert JUDGE_CHOICES == (Choice.A, Choice.B, Choice.TIE)
    assert len({c.key for c in Choice}) == 4


@pytest.mark.parametrize("choice", list(Choice))
def test_swapping_is_an_involution_that_mirrors_the_target(choice):
    assert choice.swapped().swapped() is choice
    assert choice.swapped().preference.value in ("A", "B", "none")
    if choice.target is not None:
        assert choice.swapped().target == pytest.approx(1.0 - choice.target)
    assert Choice.from_shown(choice.value, swapped=False) is choice
    assert Choice.from_shown(choice.value, swapped=True) is choice.swapped()


def test_unknown_values_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="expected one of"):
        Choice.parse("a")
    with pytest.raises(ValueError):
        Choice.from_shown("left", swapped=False)


def test_share_of_a_leaves_both_bad_out_as_training_does():
    assert share_of_a(["A", "B", "tie"]) == pytest.approx(0.5)
    assert share_of_a(["A", "both_bad"]) == pytest.approx(1.0)
    assert share_of_a(["both_bad"]) is None


# --- Every consumer agrees with the enum ------------------------------------------------------


def test_the_database_field_takes_its_values_and_labels_from_the_enum():
    from rlhf_platform.labeling.models import Choice as FieldChoice
    from rlhf_platform.labeling.models import Label

    assert [(c.value, c.label) for c in Choice] == list(FieldChoice.choices)
    assert list(Label._meta.get_field("choice").choices) == list(FieldChoice.choices)


def test_the_reward_model_trains_on_the_enum_targets():
    from ml_worker.core.enn import CHOICE_TARGETS, choices_to_targets

    assert {Choice(k): v for k, v in CHOICE_TARGETS.items()} == {c: c.target for c in Choice}
    targets, mask = choices_to_targets([c.value for c in Choice])
    assert mask.tolist() == [c.target is not None for c in Choice]
    assert targets[mask].tolist() == [c.target for c in Choice if c.target is not None]
    with pytest.raises(ValueError, match="unknown choice"):
        choices_to_targets(["C"])


def test_the_round_engine_trains_on_the_enum_targets():
    from types import SimpleNamespace

    from rlhf_platform.rounds.learn import _training_labels

    labels = [SimpleNamespace(choice=c.value) for c in Choice]
    kept, targets = _training_labels(labels)
    assert [Choice(lab.choice) for lab in kept] == list(TRAINED)
    assert torch.equal(targets, torch.tensor([c.target for c in TRAINED]))


def test_the_judges_answer_a_b_or_tie_and_map_orders_like_the_enum():
    from ml_worker.core.judges.base import CHOICES as JUDGE_VALUES
    from ml_worker.core.judges.prompting import (
        OrderAnswer,
        combine_orders,
        parse_answer,
        prob_from_choice,
    )

    assert JUDGE_VALUES == tuple(c.value for c in JUDGE_CHOICES)
    for c in JUDGE_CHOICES:
        assert prob_from_choice(c.value) == c.target
        assert parse_answer(f'{{"choice": "{c.value}"}}').choice == c.value
        # Asked twice, the second time swapped, a consistent judge gives the swapped answer.
        both = combine_orders(
            OrderAnswer(c.target, c.value, None),
            OrderAnswer(1.0 - c.target, c.swapped().value, None),
        )
        assert both.choice == c.value
        assert not both.order_disagreement
    with pytest.raises(ValueError):
        prob_from_choice(Choice.BOTH_BAD.value)


def test_the_analytics_fold_tie_and_both_bad_into_no_preference():
    from rlhf_platform.insights import stats

    assert stats.CHOICES == tuple(c.value for c in Choice)
    assert stats.KAPPA_CATEGORIES == tuple(p.value for p in Preference)
    for c in Choice:
        assert stats.preference(c.value) == c.preference.value


def test_the_api_documents_the_enum_values():
    from rlhf_platform.api.labeling import LabelSubmitApi

    field = LabelSubmitApi.InputSerializer().fields["choice"]
    schema = type(field)._spectacular_annotation["field"]
    assert schema["enum"] == [c.value for c in Choice]


def test_the_labeling_page_renders_the_enum_keys_and_the_script_hardcodes_none():
    from pathlib import Path

    from annotator_ui.views import ANSWERS

    assert ANSWERS == [(c.value, c.key, c.label) for c in Choice]
    script = Path("annotator_ui/static/annotator_ui/app.js").read_text()
    assert "both_bad" not in script and '"tie"' not in script


def test_the_simulated_annotators_draw_from_the_enum():
    from bench.soak.annotators import CHOICES as SOAK_CHOICES

    assert SOAK_CHOICES == [c.value for c in Choice]
