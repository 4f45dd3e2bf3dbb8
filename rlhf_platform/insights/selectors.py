"""Reads behind the researcher and admin pages, always through the caller's permissions.

The arithmetic lives in :mod:`rlhf_platform.insights.stats` (pure functions); these
functions read rows, feed them in, and return plain dataclasses that the pages render and
the CSV downloads flatten.

Who may read what:
- researcher pages: researchers and admins, for the campaigns they may see (a researcher
  sees the campaigns they own or belong to; an admin sees all);
- budget pages: the campaign's owner or an admin (:func:`can_manage`); the overview of all
  campaigns lists only those the caller manages.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from ml_worker.core.choice import DECISIVE, Choice, share_of_a
from rlhf_platform.accounts.models import User
from rlhf_platform.budgets.models import Budget, LedgerEntry
from rlhf_platform.budgets.selectors import BudgetStatus, budget_status
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.selectors import (
    campaigns_visible_to,
    can_manage,
    get_campaign_for_user,
)
from rlhf_platform.errors import InvalidInput, NotFound, PermissionDenied
from rlhf_platform.insights import stats
from rlhf_platform.insights.models import AuditEntry
from rlhf_platform.labeling.models import JudgeCall, Label, LabelSource, Lease, LeaseState
from rlhf_platform.rounds.models import Evaluation, ModelKind, ModelVersion, Round

# --- Access ---------------------------------------------------------------------------------


def require_researcher(user: User) -> None:
    if not user.is_authenticated or not user.is_researcher:
        raise PermissionDenied("Only researchers and admins may open this page.")


def research_campaigns(user: User) -> QuerySet[Campaign]:
    require_researcher(user)
    return campaigns_visible_to(user).order_by("name")


def get_campaign_for_researcher(user: User, campaign_id: int) -> Campaign:
    require_researcher(user)
    return get_campaign_for_user(user, campaign_id)


def get_campaigns_for_researcher(user: User, campaign_ids: Iterable[int]) -> list[Campaign]:
    """Every campaign asked for, or NotFound if any of them is not visible to ``user``."""
    require_researcher(user)
    ids = list(dict.fromkeys(campaign_ids))
    found = {c.pk: c for c in campaigns_visible_to(user).filter(pk__in=ids)}
    if len(found) != len(ids):
        raise NotFound("No such campaign.")
    return [found[i] for i in ids]


def budget_campaigns(user: User) -> list[Campaign]:
    """The campaigns whose budgets ``user`` manages (all of them for an admin)."""
    if not user.is_authenticated or not user.is_researcher:
        raise PermissionDenied("Only admins and campaign owners may open budget pages.")
    qs = campaigns_visible_to(user).select_related("budget", "owner").order_by("name")
    return [c for c in qs if can_manage(user, c)]


def get_campaign_for_budget(user: User, campaign_id: int) -> Campaign:
    if not user.is_authenticated or not user.is_researcher:
        raise PermissionDenied("Only admins and campaign owners may open budget pages.")
    return get_campaign_for_user(user, campaign_id, manage=True)


# --- Campaign page --------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    state: str
    start: dt.datetime
    end: dt.datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class RoundRow:
    index: int
    state: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_s: float
    leftovers: int
    segments: list[Segment]


def _parse_ts(value: str) -> dt.datetime | None:
    try:
        ts = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def rounds_timeline(campaign: Campaign, *, now: dt.datetime | None = None) -> list[RoundRow]:
    """Each round with the time it spent in each state (from ``Round.transitions``)."""
    now = now or timezone.now()
    rows = []
    for rnd in Round.objects.filter(campaign=campaign).order_by("index"):
        marks = [
            (state, ts)
            for state, raw in (rnd.transitions or [])
            if (ts := _parse_ts(raw)) is not None
        ]
        if not marks:
            marks.insert(0, ("generating", rnd.started_at))
        end_of_round = rnd.finished_at or now
        segments = []
        for (state, start), nxt in zip(marks, [*marks[1:], None], strict=True):
            if state in ("done", "failed"):
                break
            end = nxt[1] if nxt else end_of_round
            segments.append(Segment(state, start, max(start, end)))
        rows.append(
            RoundRow(
                index=rnd.index,
                state=rnd.state,
                started_at=rnd.started_at,
                finished_at=rnd.finished_at,
                duration_s=(end_of_round - rnd.started_at).total_seconds(),
                leftovers=rnd.leftovers,
                segments=segments,
            )
        )
    return rows


@dataclass(frozen=True)
class WinRatePoint:
    labels: int
    win_rate: float
    ci_low: float
    ci_high: float
    round_index: int
    n_prompts: int
    judge: str


def win_rate_series(campaign: Campaign) -> list[WinRatePoint]:
    evals = (
        Evaluation.objects.filter(campaign=campaign)
        .select_related("round")
        .order_by("labels_spent", "round__index")
    )
    return [
        WinRatePoint(
            labels=e.labels_spent,
            win_rate=e.win_rate,
            ci_low=e.ci_low,
            ci_high=e.ci_high,
            round_index=e.round.index,
            n_prompts=e.n_prompts,
            judge=e.judge,
        )
        for e in evals
    ]


@dataclass(frozen=True)
class FitRow:
    campaign: Campaign
    fit: stats.PowerFit | None
    labels_needed: float | None  # None when the fit does not support an extrapolation
    ratio: float | None  # labels the reference needs / labels this campaign needs
    labels_interval: tuple[float, float] | None = None  # ~95% interval of labels_needed

    @property
    def interval_text(self) -> str:
        if not self.labels_interval:
            return ""
        lo, hi = self.labels_interval
        return f"{lo:,.0f}–{'∞' if math.isinf(hi) else f'{hi:,.0f}'}"


def extrapolation(
    campaigns: list[Campaign],
    series: dict[int, list[WinRatePoint]],
    *,
    target: float,
    reference: Campaign | None = None,
) -> list[FitRow]:
    """The paper's fit per campaign, the labels it needs to reach ``target``, and the label
    ratio against ``reference`` (default: the first offline campaign, else the first one):
    a ratio of 10 means this campaign needs a tenth of the reference's labels."""
    fits = {
        c.pk: stats.fit_power_law((p.labels, p.win_rate) for p in series[c.pk]) for c in campaigns
    }
    needed = {pk: (f.labels_for(target) if f and f.supported else None) for pk, f in fits.items()}
    if reference is None and campaigns:
        reference = next((c for c in campaigns if c.algorithm == "offline"), campaigns[0])
    ref_needed = needed.get(reference.pk) if reference else None
    rows = []
    for c in campaigns:
        own = needed[c.pk]
        ratio = ref_needed / own if ref_needed and own else None
        fit = fits[c.pk]
        interval = fit.labels_interval(target) if fit and own else None
        rows.append(
            FitRow(campaign=c, fit=fit, labels_needed=own, ratio=ratio, labels_interval=interval)
        )
    return rows


@dataclass(frozen=True)
class RewardAccuracy:
    version_id: int
    round_index: int | None
    labels: int
    correct: int
    metrics: dict[str, Any]

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labels if self.labels else None


def reward_accuracy(campaign: Campaign) -> list[RewardAccuracy]:
    """Accuracy of each reward-model version on labels it had not seen.

    A comparison records ``p_mean``, the particle mean of P(A > B) from the reward version
    that selected it, *before* it was labeled: so every later label of it is held out for
    that version. Accuracy = share of decisive labels (A or B; ties and both bad skipped)
    where ``p_mean > 0.5`` exactly when the label says A. Versions that selected nothing yet
    show with no accuracy.
    """
    rows = (
        Label.objects.filter(
            campaign=campaign,
            comparison__reward_version__isnull=False,
            comparison__p_mean__isnull=False,
            choice__in=DECISIVE,
        )
        .values_list("comparison__reward_version_id", "comparison__p_mean", "choice")
        .iterator()
    )
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for version_id, p_mean, choice in rows:
        totals[version_id][0] += 1
        p_mean = cast(float, p_mean)  # not NULL: filtered out above
        totals[version_id][1] += int((p_mean > 0.5) == (choice == Choice.A))
    versions = (
        ModelVersion.objects.filter(campaign=campaign, kind=ModelKind.REWARD)
        .select_related("round")
        .order_by("id")
    )
    return [
        RewardAccuracy(
            version_id=v.pk,
            round_index=v.round.index if v.round else None,
            labels=totals[v.pk][0],
            correct=totals[v.pk][1],
            metrics=v.metrics or {},
        )
        for v in versions
    ]


@dataclass(frozen=True)
class ScoreGroup:
    round_index: int
    rule: str
    scores: list[float]
    summary: tuple[float, float, float, float, float] | None


def acquisition_scores(campaign: Campaign) -> list[ScoreGroup]:
    """Acquisition scores of the comparisons served in each round (all of them: every
    selected comparison is queued for labeling)."""
    by_round: dict[int, list[float]] = defaultdict(list)
    rules: dict[int, str] = {}
    for index, rule, score in campaign.comparisons.filter(round__isnull=False).values_list(
        "round__index", "acquisition_rule", "acquisition_score"
    ):
        by_round[index].append(score)
        rules[index] = rule
    return [
        ScoreGroup(i, rules[i], sorted(by_round[i]), stats.quartiles(by_round[i]))
        for i in sorted(by_round)
    ]


# --- Human against judge --------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorAgreement:
    username: str
    labels: int
    with_judge_n: int
    with_judge: float | None
    with_majority_n: int
    with_majority: float | None


@dataclass(frozen=True)
class Disagreement:
    comparison_id: int
    prompt: str
    response_a: str
    response_b: str
    human_choices: list[str]
    judge_choice: str
    judge_prob_a: float | None
    human_share_a: float
    gap: float


@dataclass
class Agreement:
    comparisons: int = 0
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (human, judge) per human label
    agreement: float | None = None
    kappa: float | None = None
    confusion: list[list[int]] = field(default_factory=list)
    judge_bias: stats.PositionBias | None = None
    human_bias: stats.PositionBias | None = None
    annotators: list[AnnotatorAgreement] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)


def human_judge_agreement(campaign: Campaign, *, top: int = 20) -> Agreement:
    """Agreement of human labels with the judge, on the comparisons labeled by both.

    - ``pairs``: one (human choice, judge choice) per human label of such a comparison;
      agreement rate, Cohen's kappa and the confusion table are over these pairs.
    - Position bias: the judge's over all its calls and labels in the campaign; the humans'
      over all their labels (see :class:`stats.PositionBias`).
    - Per annotator: agreement with the judge (on their judged labels) and with the majority
      of the *other* annotators of the same comparison (comparisons without a unique
      majority among the others are skipped).
    - Disagreements: comparisons ranked by ``|P_judge(A) - human share of A|``, where the
      judge's P(A) is its probability (or the training target of its choice: 1/0/0.5) and
      the human share is the mean training target of the human labels
      (:func:`ml_worker.core.choice.share_of_a`: A 1, B 0, tie 0.5, both bad left out, as in
      training; docs/choice.md). Comparisons whose human labels are all "both bad" have no
      share and are not ranked.
    """
    labels = list(
        Label.objects.filter(campaign=campaign)
        .select_related("annotator")
        .order_by("comparison_id", "id")
        .values_list(
            "comparison_id",
            "source",
            "choice",
            "shown_swapped",
            "annotator__username",
            "judge_prob_a",
        )
    )
    humans: dict[int, list[tuple[str, str]]] = defaultdict(list)
    judge: dict[int, tuple[str, float | None]] = {}
    human_shown, judge_shown = [], []
    for comparison_id, source, choice, swapped, username, prob_a in labels:
        if source == LabelSource.JUDGE:
            judge.setdefault(comparison_id, (choice, prob_a))
            judge_shown.append((choice, swapped))
        else:
            humans[comparison_id].append((username, choice))
            human_shown.append((choice, swapped))
    both = sorted(set(humans) & set(judge))
    result = Agreement(comparisons=len(both))
    result.pairs = [(choice, judge[c][0]) for c in both for _, choice in humans[c]]
    result.agreement = stats.agreement_rate(result.pairs)
    result.kappa = stats.cohen_kappa(result.pairs)
    result.confusion = stats.confusion_table(result.pairs)
    disagreements = JudgeCall.objects.filter(comparison__campaign=campaign).values_list(
        "order_disagreement", flat=True
    )
    result.judge_bias = stats.position_bias(order_disagreements=disagreements, shown=judge_shown)
    result.human_bias = stats.position_bias(order_disagreements=[], shown=human_shown)

    per_user: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c, rows in humans.items():
        for username, choice in rows:
            u = per_user[username]
            u["labels"] += 1
            if c in judge:
                u["judge_n"] += 1
                u["judge_ok"] += int(stats.preference(choice) == stats.preference(judge[c][0]))
            others = [ch for name, ch in rows if name != username]
            maj = stats.majority(others)
            if maj is not None:
                u["maj_n"] += 1
                u["maj_ok"] += int(stats.preference(choice) == maj)
    result.annotators = [
        AnnotatorAgreement(
            username=name,
            labels=u["labels"],
            with_judge_n=u["judge_n"],
            with_judge=u["judge_ok"] / u["judge_n"] if u["judge_n"] else None,
            with_majority_n=u["maj_n"],
            with_majority=u["maj_ok"] / u["maj_n"] if u["maj_n"] else None,
        )
        for name, u in sorted(per_user.items())
    ]

    gaps = []
    for c in both:
        j_choice, j_prob = judge[c]
        p_judge = j_prob if j_prob is not None else Choice(j_choice).target
        share = share_of_a([ch for _, ch in humans[c]])
        if share is None or p_judge is None:
            continue
        gaps.append((abs(p_judge - share), c, share))
    gaps.sort(key=lambda g: (-g[0], g[1]))
    chosen = [g for g in gaps[:top] if g[0] > 0]
    comps = {
        c.pk: c
        for c in campaign.comparisons.filter(pk__in=[g[1] for g in chosen]).select_related(
            "prompt", "response_a", "response_b"
        )
    }
    result.disagreements = [
        Disagreement(
            comparison_id=c,
            prompt=comps[c].prompt.text,
            response_a=comps[c].response_a.text,
            response_b=comps[c].response_b.text,
            human_choices=[ch for _, ch in humans[c]],
            judge_choice=judge[c][0],
            judge_prob_a=judge[c][1],
            human_share_a=share,
            gap=gap,
        )
        for gap, c, share in chosen
    ]
    return result


# --- Budget pages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpend:
    source: str
    labels: int
    amount: Decimal
    tokens: int
    unit_cost: Decimal


@dataclass(frozen=True)
class AnnotatorThroughput:
    username: str
    labels: int
    labels_per_hour: float | None
    median_seconds: float | None
    skipped: int
    skip_rate: float | None
    today: int
    agreement: float | None


@dataclass(frozen=True)
class BudgetOverview:
    campaign: Campaign
    budget: Budget
    status: BudgetStatus
    burn: stats.BurnRate
    labels_exhausted_on: dt.datetime | None
    cost_exhausted_on: dt.datetime | None
    warn_percent: int
    spent_fraction: float | None

    @property
    def exhausted_on(self) -> dt.datetime | None:
        dates = [d for d in (self.labels_exhausted_on, self.cost_exhausted_on) if d]
        return min(dates) if dates else None


def budget_overview(
    campaign: Campaign,
    *,
    now: dt.datetime | None = None,
    window: dt.timedelta = dt.timedelta(days=7),
) -> BudgetOverview:
    """Caps, spend, burn rate over ``window`` and projected exhaustion (see stats)."""
    now = now or timezone.now()
    status = budget_status(campaign_id=campaign.pk)
    budget = Budget.objects.get(campaign=campaign)
    events = LedgerEntry.objects.filter(budget=budget).values_list("created_at", "labels", "amount")
    burn = stats.burn_rate(events, now=now, window=window)
    fractions = []
    if budget.label_cap:
        fractions.append(budget.labels_spent / budget.label_cap)
    if budget.cost_cap:
        fractions.append(float(budget.cost_spent / budget.cost_cap))
    return BudgetOverview(
        campaign=campaign,
        budget=budget,
        status=status,
        burn=burn,
        labels_exhausted_on=stats.exhaustion_date(
            remaining=status.labels_remaining, per_day=burn.labels_per_day, now=now
        ),
        cost_exhausted_on=stats.exhaustion_date(
            remaining=None if status.cost_remaining is None else float(status.cost_remaining),
            per_day=burn.cost_per_day,
            now=now,
        ),
        warn_percent=round(budget.warn_fraction * 100),
        spent_fraction=max(fractions) if fractions else None,
    )


def spend_by_source(campaign: Campaign) -> list[SourceSpend]:
    """Human labels at their unit price, judge calls at theirs (and the tokens they used)."""
    budget = Budget.objects.get(campaign=campaign)
    rows = {
        r["source"]: r
        for r in LedgerEntry.objects.filter(budget=budget)
        .values("source")
        .annotate(labels=Sum("labels"), amount=Sum("amount"), tokens=Sum("tokens"))
    }
    out = []
    for source, unit in (("human", budget.human_label_cost), ("judge", budget.judge_call_cost)):
        r = rows.get(source)
        out.append(
            SourceSpend(
                source=source,
                labels=(r["labels"] or 0) if r else 0,
                amount=(r["amount"] or Decimal("0")) if r else Decimal("0"),
                tokens=(r["tokens"] or 0) if r else 0,
                unit_cost=unit,
            )
        )
    return out


LEDGER_SOURCES = ("human", "judge")


def ledger_entries(
    campaign: Campaign,
    *,
    source: str = "",
    annotator: str = "",
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> QuerySet[LedgerEntry]:
    """The campaign's ledger, newest first, filtered by source, annotator name, and days
    (``since`` and ``until`` inclusive, UTC)."""
    qs = LedgerEntry.objects.filter(budget__campaign=campaign).select_related("annotator")
    if source:
        if source not in LEDGER_SOURCES:
            raise InvalidInput(f"Unknown source {source!r}.", code="invalid_filter")
        qs = qs.filter(source=source)
    if annotator:
        qs = qs.filter(annotator__username=annotator)
    if since:
        qs = qs.filter(created_at__date__gte=since)
    if until:
        qs = qs.filter(created_at__date__lte=until)
    return qs.order_by("-created_at", "-id")


def annotator_throughput(
    campaign: Campaign, *, agreement: Agreement | None = None, now: dt.datetime | None = None
) -> list[AnnotatorThroughput]:
    """Per annotator: labels, labels per hour *of time on task* (3600 / mean seconds per
    label, from each label's ``time_taken_ms``), median seconds per label, skip rate
    (skipped leases / (skipped + submitted leases)), labels given today (UTC, against the
    daily cap), and agreement (with the judge where it labeled, else with the majority of
    the other annotators)."""
    now = now or timezone.now()
    day_start = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    times: dict[str, list[int]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    today: dict[str, int] = defaultdict(int)
    for username, ms, created in Label.objects.filter(
        campaign=campaign, source=LabelSource.HUMAN
    ).values_list("annotator__username", "time_taken_ms", "created_at"):
        counts[username] += 1
        if ms:
            times[username].append(ms)
        if created >= day_start:
            today[username] += 1
    leases = {
        r["annotator__username"]: r
        for r in Lease.objects.filter(campaign=campaign)
        .values("annotator__username")
        .annotate(
            skipped=Count("id", filter=Q(state=LeaseState.SKIPPED)),
            submitted=Count("id", filter=Q(state=LeaseState.SUBMITTED)),
        )
    }
    agree = {a.username: a for a in (agreement.annotators if agreement else [])}
    out = []
    for name in sorted(set(counts) | set(leases)):
        ts = times.get(name, [])
        lease = leases.get(name, {"skipped": 0, "submitted": 0})
        answered = lease["skipped"] + lease["submitted"]
        a = agree.get(name)
        out.append(
            AnnotatorThroughput(
                username=name,
                labels=counts.get(name, 0),
                labels_per_hour=3600 / (sum(ts) / len(ts) / 1000) if ts else None,
                median_seconds=(stats.median_or_none(ts) or 0) / 1000 if ts else None,
                skipped=lease["skipped"],
                skip_rate=lease["skipped"] / answered if answered else None,
                today=today.get(name, 0),
                agreement=(a.with_judge if a and a.with_judge is not None else a.with_majority)
                if a
                else None,
            )
        )
    return out


def audit_log(campaign: Campaign, *, limit: int = 50) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(campaign=campaign).select_related("actor")[:limit])
