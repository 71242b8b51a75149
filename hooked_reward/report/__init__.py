"""Reports: an HTML page with PNG plots and a JSON of every number."""

from hooked_reward.report.html import Report

__all__ = ["Report"]
