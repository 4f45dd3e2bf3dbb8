"""Role checks of the API. Per-campaign access goes through the campaign selectors
(:func:`rlhf_platform.campaigns.selectors.get_campaign_for_user`); per-lease access through
:func:`rlhf_platform.labeling.selectors.get_lease_for_annotator`."""

from __future__ import annotations

from rlhf_platform.accounts.models import User
from rlhf_platform.errors import PermissionDenied


def require_researcher(user: User) -> None:
    """Researchers and admins only. Call it before parsing the body, so that an annotator
    gets 403 ``permission_denied`` whatever they send."""
    if not user.is_researcher:
        raise PermissionDenied("Only researchers and admins may do this.")
