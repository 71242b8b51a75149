"""`hooked-reward demo`: `analyze` on the bundled organism and its own pairs (24 by default: `cli.ORGANISM_PAIRS`),
no arguments needed. It shares `analyze`'s units, summary, report and results store."""

from __future__ import annotations

from hooked_reward.study.analyze import Analyze

__all__ = ["COMMAND", "Demo"]


class Demo(Analyze):
    name = "demo"
    help = "lens, attribution and patching on the bundled organism"
    default_out = "hooked_reward_report"
    study_name = "analyze"


COMMAND = Demo()
