"""One warning per kind per run (issue 32): the CLI prints each kind once with its count."""

from __future__ import annotations

import io
import warnings

from hooked_reward.run_warnings import one_per_kind


def _per_pair(i: int) -> None:
    warnings.warn(f"pair {i}: a word the tokenizer does not know", UserWarning, stacklevel=1)


def test_a_warning_raised_per_pair_is_printed_once_with_its_count() -> None:
    stream = io.StringIO()
    with one_per_kind("hooked-reward analyze", stream) as caught:
        for i in range(5):
            _per_pair(i)
        warnings.warn("another kind", RuntimeWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    assert len(caught) == 6
    assert lines == [
        "hooked-reward analyze: warning (UserWarning): pair 0: a word the tokenizer does not know "
        "(5 times in this run; shown once)",
        "hooked-reward analyze: warning (RuntimeWarning): another kind",
    ]


def test_the_users_filters_still_apply() -> None:
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with one_per_kind("x", stream):
            _per_pair(0)
    assert stream.getvalue() == ""
