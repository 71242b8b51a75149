"""A small report writer: sections of text, figures (saved as PNG) and tables, plus one JSON of every number.

Every CLI command writes its folder through this: `index.html`, `*.png`, `report.json`.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


def to_jsonable(value: Any) -> Any:
    """Tensors, arrays and numpy scalars as plain lists/floats; NaN/inf as strings (valid JSON)."""
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return to_jsonable({k: getattr(value, k) for k in value.__dataclass_fields__})
    return value


@dataclass
class Report:
    """Collects sections; `write()` renders `index.html` and `report.json` into `out_dir`."""

    out_dir: Path
    title: str
    sections: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def add_text(self, heading: str, text: str) -> None:
        self.sections.append({"heading": heading, "text": text})

    def add_figure(self, heading: str, fig: Any, name: str, caption: str = "") -> Path:
        """Save a matplotlib figure as `<name>.png` and show it under `heading`."""
        import matplotlib.pyplot as plt

        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.sections.append({"heading": heading, "image": path.name, "text": caption})
        return path

    def add_table(self, heading: str, rows: list[dict[str, Any]], caption: str = "") -> None:
        self.sections.append({"heading": heading, "table": rows, "text": caption})

    def add_data(self, key: str, value: Any) -> None:
        self.data[key] = to_jsonable(value)

    def write(self) -> Path:
        """Write `index.html` and `report.json`; returns the HTML path."""
        (self.out_dir / "report.json").write_text(json.dumps(self.data, indent=1))
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
            "img{max-width:100%}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for section in self.sections:
            parts.append(f"<h2>{html.escape(section['heading'])}</h2>")
            if section.get("text"):
                parts.append(f"<p>{html.escape(section['text'])}</p>")
            if "image" in section:
                parts.append(f"<img src='{html.escape(section['image'])}' alt='{html.escape(section['heading'])}'>")
            if "table" in section and section["table"]:
                rows = section["table"]
                cols = list(rows[0])
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in cols) + "</tr>")
                for row in rows:
                    parts.append("<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in cols) + "</tr>")
                parts.append("</table>")
        parts.append("<p>Every number above is in <a href='report.json'>report.json</a>.</p></body></html>")
        out = self.out_dir / "index.html"
        out.write_text("\n".join(parts))
        return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
