"""Unlabelled pairs grouped by their dominant component (issue 36 item 5), on planted mechanisms."""

from __future__ import annotations

import numpy as np
import pytest

from hooked_reward.analysis.grouping import OTHER, group_by_dominant, largest_margins
from hooked_reward.errors import InputError


def test_two_planted_mechanisms_form_two_groups() -> None:
    """Pairs 0-9 are carried by L0H1, pairs 10-15 by L1H0 (one of them with a negative margin, so the component
    that pushes toward the rejected side is its dominant one), pair 16 by L1H1 alone: too few for a group."""
    rng = np.random.default_rng(0)
    labels = ["L0H0", "L0H1", "L1H0", "L1H1"]
    profiles = rng.normal(0, 0.05, (17, 4))
    profiles[:10, 1] += 1.0
    profiles[10:16, 2] += 1.0
    profiles[15] *= -1  # a pair the model gets wrong, carried by L1H0 the other way
    profiles[16, 3] += 1.0
    margins = profiles.sum(1)
    groups = group_by_dominant(profiles, margins, labels)
    assert groups.groups == {"L0H1": list(range(10)), "L1H0": list(range(10, 16)), OTHER: [16]}
    assert groups.dominant[16] == "L1H1"
    assert (groups.share > 0.8).all()
    assert groups.spread["n_groups"] == 3 and groups.spread["largest"] == pytest.approx(10 / 17)


def test_largest_margins_and_bad_input() -> None:
    assert largest_margins(np.array([0.1, -3.0, np.nan, 2.0]), 3) == [1, 3, 0]
    with pytest.raises(InputError, match="one label per component"):
        group_by_dominant(np.zeros((2, 3)), np.zeros(2), ["a", "b"])
