"""Reports: every command's HTML page (one Jinja2 base template), its PNG plots and one `report.json`.

Analyses return data; only this package (and the CLI) writes files, always atomically (`Report`).
"""

from hooked_reward.report.compare import write_compare_report
from hooked_reward.report.extensions import default_dimensions, write_extensions_report
from hooked_reward.report.html import SCHEMA, Report, check_output_dir, format_value, safe_name, to_jsonable
from hooked_reward.report.probes import write_probe_report

__all__ = [
    "SCHEMA",
    "Report",
    "check_output_dir",
    "default_dimensions",
    "format_value",
    "safe_name",
    "to_jsonable",
    "write_compare_report",
    "write_extensions_report",
    "write_probe_report",
]
