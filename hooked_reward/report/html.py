"""The one report writer: sections of text, figures (PNG), tables and interactive views, rendered through one
Jinja2 base template (`templates/base.html.j2`), plus `report.json` with every number.

Every CLI command writes its folder through `Report`. Writing is atomic: everything goes into a temporary
folder beside the target (`.NAME.partial-*`), and `write()` renames it into place at the end, so an interrupted
run leaves the previous report untouched and a new run replaces the old one entirely.

A report folder is ours or untouched. Every report carries a marker file, `.hooked-reward-report` (JSON: the
report's id, command, the writing process and every file the report wrote). A folder may be replaced only when it
holds that marker and nothing the marker does not list; any other non-empty folder (a site with an `index.html`,
a thesis beside a `report.json`, a report with a user's notes added) is refused before any work, naming what is
there. Folders follow the umask. Temporary folders of a killed run (`.NAME.partial-*`, `.NAME.old-*`, each
marked as ours, its process gone) are removed by the next run into the same place.

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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hooked_reward.errors import InputError
from hooked_reward.processes import pid_alive
from hooked_reward.report.glossary import column_help, column_label, readable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MARKER", "Report", "SCHEMA", "check_output_dir", "format_value", "read_marker", "safe_name", "to_jsonable"]

#: The name and version of `report.json`'s layout: {schema, command, title, provenance, sections, results}.
SCHEMA = "hooked_reward.report/1"

_TEMPLATES = Path(__file__).resolve().parent / "templates"
#: The marker file every report folder (and every temporary folder of one) carries.
MARKER = ".hooked-reward-report"
_REPORT_FILES = {"index.html", "report.json", MARKER}


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


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of a report folder written by us (`MARKER`), or None when there is none or it is not ours (not
    a JSON object with our schema, a report id and the list of files)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    ok = isinstance(marker, dict) and marker.get("schema") == SCHEMA and isinstance(marker.get("files"), list)
    return marker if ok and isinstance(marker.get("report_id"), str) else None


def _foreign_entries(folder: Path) -> list[str]:
    """What `folder` holds that a report of ours did not write: everything when it has no marker of ours, else
    the entries the marker does not list (a file a user added, a subfolder)."""
    entries = sorted(p.name for p in folder.iterdir())
    marker = read_marker(folder)
    if marker is None:
        return entries
    ours = set(marker["files"]) | {MARKER}
    return [e for e in entries if e not in ours or not (folder / e).is_file() or (folder / e).is_symlink()]


def _describe(entries: list[str], folder: Path) -> str:
    shown = [e + ("/" if (folder / e).is_dir() else "") for e in entries[:5]]
    return ", ".join(shown) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")


def check_output_dir(path: str | Path) -> Path:
    """Refuse, before any work, an output folder that cannot receive a report: a path that is a file, a place we
    may not write, or a non-empty folder that is not a report of ours holding only what that report wrote (see
    the module docstring). Returns the absolute path."""
    out = Path(path).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"Output path {str(out)!r} is a file; give a folder for the report (--out DIR).")
    if out.is_dir():
        foreign = _foreign_entries(out)
        if foreign:
            marker = read_marker(out)
            what = "a report of ours with files it did not write" if marker else "files that are not a report of ours"
            raise InputError(
                f"Output folder {str(out)!r} holds {what} ({_describe(foreign, out)}); a report replaces its "
                "folder, and nothing of yours is deleted: give a new or empty folder (--out NEW_DIR), or move "
                "those files out."
            )
        if out.resolve() == Path.cwd().resolve() or out.resolve() in Path.cwd().resolve().parents:
            raise InputError(
                f"--out {str(path)!r} is the current folder (or holds it); a report replaces its folder, so give a "
                "new folder for it, e.g. --out report."
            )
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"Cannot create output folder {str(out)!r}: {str(parent)!r} is a file.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write the report into {str(out)!r}: {str(parent)!r} is not writable.")
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _process_alive(marker: dict[str, Any]) -> bool:
    """Whether the process that wrote `marker` may still be running (same host and its pid exists)."""
    import socket

    if marker.get("host") != socket.gethostname():
        return True  # another machine's process: we cannot tell, so leave its folder alone
    return pid_alive(marker.get("pid"))


def remove_leftovers(out: Path) -> list[Path]:
    """Remove the temporary folders a killed run left beside `out` (`.NAME.partial-*`, `.NAME.old-*`): only those
    that are empty or carry our marker (written when we created them) and whose process is gone. Returns what was
    removed."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for prefix in (f".{out.name}.partial-", f".{out.name}.old-"):
        for leftover in sorted(out.parent.glob(prefix + "*")):
            if not leftover.is_dir() or leftover.is_symlink():
                continue
            if any(leftover.iterdir()):
                marker = read_marker(leftover)
                if marker is None or _process_alive(marker):
                    continue  # not provably ours, or a run in progress: leave it
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


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
        remove_leftovers(self.out_dir)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        os.chmod(self.tmp_dir, 0o777 & ~_umask())  # mkdtemp makes 0700; a report folder follows the umask
        self.report_id = uuid.uuid4().hex
        self._write_marker()
        self._done = False

    def _write_marker(self) -> None:
        """(Re)write the marker listing every file now in the temporary folder."""
        import socket

        files = sorted(p.name for p in self.tmp_dir.iterdir() if p.name != MARKER)
        marker = {
            "schema": SCHEMA,
            "report_id": self.report_id,
            "command": self.command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "files": files,
        }
        (self.tmp_dir / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")

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
        env.filters["cell"] = lambda v: readable(v) if isinstance(v, str) else format_value(v)
        env.tests["defined_column"] = lambda c: bool(column_help(c))
        return env.get_template("base.html.j2").render(
            title=self.title,
            intro=self.intro,
            sections=self.sections,
            columns_of=lambda s: s.columns or (list(s.table[0]) if s.table else []),
            label_of=column_label,
            help_of=column_help,
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
            self._write_marker()
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
            check_output_dir(target)  # still a report folder of ours holding only its files (or empty)
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            (old / MARKER).write_text(
                json.dumps({**json.loads((self.tmp_dir / MARKER).read_text()), "files": [target.name]}),
                encoding="utf-8",
            )
            os.replace(target, old / target.name)
        os.replace(self.tmp_dir, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
