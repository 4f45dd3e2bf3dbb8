from __future__ import annotations

import pytest

from tests.rlhf_platform.insights.seed import seed_campaign


@pytest.fixture
def seeded(researcher, annotator, other_annotator):
    return seed_campaign(researcher, [annotator, other_annotator])
