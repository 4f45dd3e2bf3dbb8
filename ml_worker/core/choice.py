"""A label's answer to "which of the two responses is better": the one definition.

Every consumer reads its meaning from here: the database field (``labeling.models.Choice``
takes its values and labels from :class:`Choice`), the labeling page (buttons and keys), the
API's enum, the judges (which answer A, B or tie), the reward model's training targets, the
insights pages and the exports. ``docs/choice.md`` explains the decisions.

- **Order.** A stored choice is in the comparison's own A/B terms. An annotator may have seen
  the pair swapped (B on the left); :meth:`Choice.from_shown` maps the answer given in the
  order shown to the stored one, and :meth:`Choice.swapped` is the mapping itself (A <-> B;
  tie and both bad are symmetric).
- **Training target.** The Bradley-Terry target for "A is preferred": A 1, B 0, tie 1/2.
  Both bad says nothing about which of the two is better, so it has no target and is kept
  out of the reward-model loss (the label is still stored, counted and exported).
- **Analytics.** Agreement and kappa compare *preferences*: A, B, or no preference (tie and
  both bad). Numeric summaries (the human share of A) use the training target, so both bad
  is left out of them exactly as it is left out of training.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Choice",
    "Preference",
    "CHOICES",
    "DECISIVE",
    "JUDGE_CHOICES",
    "TRAINED",
    "share_of_a",
]


class Preference(StrEnum):
    """What a choice says about which response is better (the analytics value)."""

    A = "A"
    B = "B"
    NONE = "none"  # tie or both bad: neither response is preferred


class Choice(StrEnum):
    """A, B, tie or both bad, in the comparison's own A/B order."""

    A = "A"
    B = "B"
    TIE = "tie"
    BOTH_BAD = "both_bad"

    @property
    def label(self) -> str:
        """Human-readable text (the database field's choice label and the page's button)."""
        return _LABELS[self]

    @property
    def key(self) -> str:
        """The labeling page's keyboard shortcut."""
        return _KEYS[self]

    @property
    def target(self) -> float | None:
        """Bradley-Terry target for "A preferred": 1, 0, 1/2; None (not trained on) for both
        bad."""
        return _TARGETS[self]

    @property
    def preference(self) -> Preference:
        """The analytics value: A, B, or no preference (tie and both bad)."""
        if self is Choice.A:
            return Preference.A
        if self is Choice.B:
            return Preference.B
        return Preference.NONE

    @property
    def decisive(self) -> bool:
        """A or B: one response is named better (the only labels a chosen/rejected export
        holds)."""
        return self in (Choice.A, Choice.B)

    def swapped(self) -> Choice:
        """The same answer seen from the other order: A <-> B; tie and both bad unchanged."""
        return _SWAP[self]

    @classmethod
    def from_shown(cls, shown: str, *, swapped: bool) -> Choice:
        """The stored choice for an answer given in the order shown (``swapped``: B was shown
        first). Raises ValueError for an unknown value."""
        choice = cls(shown)
        return choice.swapped() if swapped else choice

    @classmethod
    def parse(cls, value: str) -> Choice:
        """``Choice(value)`` with an error message that lists the valid values."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown choice {value!r}; expected one of {[c.value for c in cls]}"
            ) from None


_LABELS = {
    Choice.A: "A is better",
    Choice.B: "B is better",
    Choice.TIE: "Tie",
    Choice.BOTH_BAD: "Both bad",
}
_KEYS = {Choice.A: "1", Choice.B: "2", Choice.TIE: "3", Choice.BOTH_BAD: "0"}
_TARGETS: dict[Choice, float | None] = {
    Choice.A: 1.0,
    Choice.B: 0.0,
    Choice.TIE: 0.5,
    Choice.BOTH_BAD: None,
}
_SWAP = {
    Choice.A: Choice.B,
    Choice.B: Choice.A,
    Choice.TIE: Choice.TIE,
    Choice.BOTH_BAD: Choice.BOTH_BAD,
}

#: Every value, in display order.
CHOICES: tuple[Choice, ...] = tuple(Choice)
#: The values that name a better response (A, B).
DECISIVE: tuple[Choice, ...] = tuple(c for c in Choice if c.decisive)
#: The values with a training target (everything but both bad).
TRAINED: tuple[Choice, ...] = tuple(c for c in Choice if c.target is not None)
#: What a judge may answer: a judge is asked which response is better, or whether they tie.
JUDGE_CHOICES: tuple[Choice, ...] = (Choice.A, Choice.B, Choice.TIE)


def share_of_a(choices: list[str] | tuple[str, ...]) -> float | None:
    """Mean training target of ``choices``: the share of A, a tie counting one half. Both bad
    is left out, as in training; None when no choice has a target."""
    targets = [t for t in (Choice(c).target for c in choices) if t is not None]
    return sum(targets) / len(targets) if targets else None
