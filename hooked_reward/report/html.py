"""The one report writer: sections of text, figures (PNG), tables and interactive views, rendered through one
Jinja2 base template (`templates/base.html.j2`), plus `report.json` with every number.

Every CLI command writes its folder through `Report`. Writing is atomic: everything goes into a temporary
folder beside the target (`.NAME.partial-*`), and `write()` renames it into place at the end, so an interrupted
run leaves the previous report untouched and a new run replaces the old one entirely.

    with Report("out", "My analysis", command="analyze", provenance={...}) as report:
        report.add_table("Behaviour", rows, "what the columns mean")
        report.add_figure("Lens", fig, "lens", "caption")
        report.add_data("behaviour", rows)
        report.write()          # out/index.html, out/lens.png, out/report.json
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hooked_reward.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Report", "SCHEMA", "check_output_dir", "format_value", "safe_name", "to_jsonable"]

#: The name and version of `report.json`'s layout: {schema, command, title, provenance, sections, results}.
SCHEMA = "hooked_reward.report/1"

_TEMPLATES = Path(__file__).resolve().parent / "templates"
_REPORT_FILES = {"index.html", "report.json"}


def to_jsonable(value: Any) -> Any:
    """Tensors, arrays and numpy scalars as plain lists/floats; NaN/inf as strings (valid JSON); objects with a
    `to_json()` (analysis results) through it."""
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
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json") and callable(value.to_json):
        return to_jsonable(value.to_json())
    if hasattr(value, "__dataclass_fields__"):
        return to_jsonable({k: getattr(value, k) for k in value.__dataclass_fields__})
    return value


def safe_name(label: str, taken: set[str] | None = None) -> str:
    """A file-name-safe version of `label` (letters, digits, `_`, `-` and single dots; anything else, `..` and `/`
    included, becomes `_`), made unique against `taken` (which it updates) with a numeric suffix."""
    base = re.sub(r"[^A-Za-z0-9._-]+|\.\.+", "_", str(label))
    base = re.sub(r"_+", "_", base).strip("._") or "item"
    base = base[:80]
    name, k = base, 2
    while taken is not None and name in taken:
        name, k = f"{base}_{k}", k + 1
    if taken is not None:
        taken.add(name)
    return name


def format_value(value: Any) -> str:
    """How a value reads in a table or sentence: floats to 4 significant digits, NaN as 'n/a', lists joined
    with commas, booleans as yes/no, None as an en dash; never a Python repr."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "+∞" if value > 0 else "−∞"
        return f"{value:.4g}"
    if isinstance(value, list | tuple | set):
        return ", ".join(format_value(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {format_value(v)}" for k, v in value.items()) if value else "none"
    return str(value)


def check_output_dir(path: str | Path) -> Path:
    """Refuse, before any work, an output folder that cannot receive a report: a path that is a file, a folder
    holding other things than a previous report, or a place we may not write. Returns the absolute path."""
    out = Path(path).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"Output path {str(out)!r} is a file; give a folder for the report (--out DIR).")
    if out.is_dir():
        entries = {p.name for p in out.iterdir()}
        if entries and not (entries & _REPORT_FILES):
            raise InputError(
                f"Output folder {str(out)!r} already holds other files ({', '.join(sorted(entries)[:3])}, ...) and "
                "no report; a report replaces its folder entirely, so give a new folder or a previous report's."
            )
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"Cannot create output folder {str(out)!r}: {str(parent)!r} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write the report into {str(out)!r}: {str(parent)!r} is not writable.")
    return out


@dataclass
class Section:
    """One part of the page: a heading (level 2 or 3), paragraphs, and at most one figure, table or view."""

    heading: str
    level: int = 2
    text: list[str] = field(default_factory=list)
    image: str | None = None
    table: list[dict[str, Any]] | None = None
    columns: list[str] | None = None
    html: str | None = None
    anchor: str = ""
    css_class: str = ""


class Report:
    """Collects sections; `write()` renders `index.html` (Jinja2) and `report.json` and moves them into place.

    `command`: the CLI command (or any name) recorded in `report.json`; `provenance`: a flat dict shown at the
    end of the page and stored in `report.json` (model, versions, settings, ...); `intro`: a first paragraph.
    Use it as a context manager: leaving the block by an exception discards the unfinished report.
    """

    def __init__(
        self,
        out_dir: str | Path,
        title: str,
        *,
        command: str = "",
        provenance: dict[str, Any] | None = None,
        intro: str = "",
    ) -> None:
        self.out_dir = check_output_dir(out_dir)
        self.title = title
        self.command = command
        self.provenance = dict(provenance or {})
        self.intro = intro
        self.sections: list[Section] = []
        self.data: dict[str, Any] = {}
        self.scripts: list[str] = []
        self._names: set[str] = set(_REPORT_FILES)
        self._anchors: set[str] = set()
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        self._done = False

    # ------------------------------------------------------------------------------------------ context
    def __enter__(self) -> Report:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None or not self._done:
            self.discard()

    def discard(self) -> None:
        """Drop the unfinished report (the temporary folder); the previous report, if any, is untouched."""
        if not self._done:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self._done = True

    # ------------------------------------------------------------------------------------------ content
    def _section(self, heading: str, level: int, text: str | list[str] = "", **kw: Any) -> Section:
        paragraphs = [text] if isinstance(text, str) else list(text)
        section = Section(heading, level, [p for p in paragraphs if p], anchor=self._anchor(heading), **kw)
        self.sections.append(section)
        return section

    def _anchor(self, heading: str) -> str:
        return safe_name(heading.lower(), self._anchors)

    def add_text(self, heading: str, text: str | list[str], *, level: int = 2) -> None:
        """A heading and one or more paragraphs (plain text; escaped)."""
        self._section(heading, level, text)

    def add_figure(self, heading: str, fig: Figure, name: str, caption: str = "", *, level: int = 2) -> str:
        """Save a matplotlib figure as `<safe name>.png` and show it under `heading`; returns the file name."""
        import matplotlib.pyplot as plt

        filename = safe_name(name, self._names) + ".png"
        fig.savefig(self.tmp_dir / filename, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self._section(heading, level, caption, image=filename)
        return filename

    def add_image(self, heading: str, png: bytes, name: str, caption: str = "", *, level: int = 2) -> str:
        """A PNG already rendered (e.g. a figure kept in the results store) as `<safe name>.png` under `heading`."""
        filename = safe_name(name, self._names) + ".png"
        (self.tmp_dir / filename).write_bytes(png)
        self._section(heading, level, caption, image=filename)
        return filename

    def add_table(
        self,
        heading: str,
        rows: list[dict[str, Any]],
        caption: str | list[str] = "",
        *,
        level: int = 2,
        columns: list[str] | None = None,
        css_class: str = "",
    ) -> None:
        """A table of `rows` (dicts; columns from the first row unless given), values through `format_value`;
        `caption`: one paragraph or several."""
        self._section(heading, level, caption, table=list(rows), columns=columns, css_class=css_class)

    def add_html(self, heading: str, markup: str, caption: str = "", *, level: int = 2, css_class: str = "") -> None:
        """Trusted markup made by this package (interactive views, highlighted tokens), inserted as is."""
        self._section(heading, level, caption, html=markup, css_class=css_class)

    def add_asset(self, name: str, content: str | bytes, *, script: bool = False) -> str:
        """Write a file into the report folder (e.g. a JavaScript bundle, loaded with `script=True`)."""
        filename = safe_name(name, self._names)
        path = self.tmp_dir / filename
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        if script:
            self.scripts.append(filename)
        return filename

    def add_data(self, key: str, value: Any) -> None:
        """Store `value` (tensors, arrays, results with `to_json()` ...) under `results[key]` in report.json."""
        self.data[key] = to_jsonable(value)

    # ------------------------------------------------------------------------------------------ output
    def render(self) -> str:
        """The HTML page, from the base template."""
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["fmt"] = format_value
        return env.get_template("base.html.j2").render(
            title=self.title,
            intro=self.intro,
            sections=self.sections,
            columns_of=lambda s: s.columns or (list(s.table[0]) if s.table else []),
            provenance={k: format_value(v) for k, v in self.provenance.items()},
            scripts=self.scripts,
            markup=jinja2.utils.markupsafe.Markup,
        )

    def json(self) -> dict[str, Any]:
        """What report.json holds."""
        return {
            "schema": SCHEMA,
            "command": self.command,
            "title": self.title,
            "provenance": to_jsonable(self.provenance),
            "sections": [s.heading for s in self.sections],
            "results": self.data,
        }

    def write(self) -> Path:
        """Render `index.html` and `report.json`, then move the finished folder into place (replacing a previous
        report entirely). Returns the path of `index.html`."""
        if self._done:
            raise InputError("This report was already written or discarded; make a new Report.")
        try:
            (self.tmp_dir / "report.json").write_text(json.dumps(self.json(), indent=1, allow_nan=False))
            (self.tmp_dir / "index.html").write_text(self.render(), encoding="utf-8")
            self._replace_target()
        except BaseException:
            self.discard()
            raise
        self._done = True
        return self.out_dir / "index.html"

    def _replace_target(self) -> None:
        target = self.out_dir
        old: Path | None = None
        if target.exists():
            check_output_dir(target)  # still a report folder (or empty)
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(self.tmp_dir, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
