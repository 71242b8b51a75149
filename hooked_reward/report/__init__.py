"""Reports: every command's HTML page (one Jinja2 base template), its PNG plots and one `report.json`.

Renderers only: each takes result objects (computed by `hooked_reward.study` or by the caller) and draws and
words them; nothing here runs an analysis or imports the study layer. Only this package writes report files,
always atomically (`Report`).
"""

from typing import TYPE_CHECKING

from hooked_reward._lazy import lazy_exports

if TYPE_CHECKING:
    from hooked_reward.report.compare import write_compare_report
    from hooked_reward.report.extensions import write_extensions_report
    from hooked_reward.report.html import SCHEMA, Report, check_output_dir, format_value, safe_name, to_jsonable
    from hooked_reward.report.probes import write_probe_report

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hooked_reward.report.compare": ["write_compare_report"],
        "hooked_reward.report.extensions": ["write_extensions_report"],
        "hooked_reward.report.html": [
            "SCHEMA",
            "Report",
            "check_output_dir",
            "format_value",
            "safe_name",
            "to_jsonable",
        ],
        "hooked_reward.report.probes": ["write_probe_report"],
    },
)

__all__ = [
    "SCHEMA",
    "Report",
    "check_output_dir",
    "format_value",
    "safe_name",
    "to_jsonable",
    "write_compare_report",
    "write_extensions_report",
    "write_probe_report",
]
