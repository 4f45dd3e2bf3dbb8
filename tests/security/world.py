"""The cast of the security tests: every role, two campaigns, and one object of each kind.

``campaign`` ("Helpfulness") is the target of every request. Its cast: ``annotator`` (a
member), ``owner`` (the researcher who owns it), ``researcher_member`` (a researcher who
belongs to it without owning it) and ``admin``. The other campaign ("Other team") has its own
owner (``outsider_researcher``) and member (``outsider_annotator``): members of *another*
campaign, who must learn nothing about this one, not even that its ids exist.

Every text of the target campaign carries :data:`SENTINEL`, so a denial that leaks any field
of it is caught by looking for that string in the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rest_framework.authtoken.models import Token

from rlhf_platform.accounts.models import Role, User
from rlhf_platform.campaigns.models import Campaign
from rlhf_platform.campaigns.services import prompts_import
from rlhf_platform.labeling.models import Lease
from rlhf_platform.labeling.services import comparison_next, label_submit
from rlhf_platform.rounds.models import Round, RoundState
from rlhf_platform.rounds.state import round_fail
from tests.conftest import make_campaign, make_user

SENTINEL = "zq-sentinel-7f3a"

ROLES = (
    "anonymous",
    "annotator",
    "owner",
    "researcher_member",
    "admin",
    "outsider_annotator",
    "outsider_researcher",
)
OUTSIDERS = ("outsider_annotator", "outsider_researcher")


@dataclass
class World:
    users: dict[str, User | None]
    campaign: Campaign
    foreign_campaign: Campaign
    lease: Lease
    failed_round: Round
    tokens: dict[str, str] = field(default_factory=dict)

    def user(self, role: str) -> User | None:
        return self.users[role]


def build_world() -> World:
    annotator = make_user("anna")
    owner = make_user("rita", Role.RESEARCHER)
    researcher_member = make_user("remy", Role.RESEARCHER)
    admin = make_user("ada", Role.ADMIN, is_staff=True, is_superuser=True)
    outsider_annotator = make_user("olga")
    outsider_researcher = make_user("oscar", Role.RESEARCHER)
    campaign = make_campaign(
        owner, name=f"Helpfulness {SENTINEL}", members=(annotator, researcher_member)
    )
    Campaign.objects.filter(pk=campaign.pk).update(
        description=f"about {SENTINEL}", guidelines=f"rules {SENTINEL}"
    )
    campaign.refresh_from_db()
    prompts_import(
        campaign=campaign, content=f'{{"prompt": "secret prompt {SENTINEL}"}}\n', fmt="jsonl"
    )
    foreign = make_campaign(outsider_researcher, name="Other team", members=(outsider_annotator,))
    lease = comparison_next(annotator=annotator, campaign_id=campaign.pk).lease
    # One label, so that the exports have a row to give (an empty export is a 409).
    labeled = comparison_next(annotator=researcher_member, campaign_id=campaign.pk).lease
    label_submit(
        annotator=researcher_member,
        lease_id=labeled.pk,
        choice="A",
        idempotency_key="world-label",
        rationale=f"because {SENTINEL}",
    )
    failed = Round.objects.create(campaign=campaign, index=0, state=RoundState.LEARNING)
    round_fail(round_id=failed.pk, reason=f"out of memory {SENTINEL}")
    failed.refresh_from_db()
    users: dict[str, User | None] = {
        "anonymous": None,
        "annotator": annotator,
        "owner": owner,
        "researcher_member": researcher_member,
        "admin": admin,
        "outsider_annotator": outsider_annotator,
        "outsider_researcher": outsider_researcher,
    }
    world = World(users, campaign, foreign, lease, failed)
    world.tokens = {
        role: Token.objects.create(user=user).key for role, user in users.items() if user
    }
    return world
