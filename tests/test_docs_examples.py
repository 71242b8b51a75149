"""Every Python example in the README and the docs pages runs (issue 29): a stale example (a renamed function, an
argument that no longer exists, a pair order the code reads the other way) fails here, not in a reader's hands.

Each page's blocks run in order in one namespace that starts with the names the pages assume (`model`, `texts`,
`chosen`, `rejected`, `tokens`, `mask`, ...), built from the sycophancy organism. Placeholder paths
(`"path/to/checkpoint"`) are replaced by the organism's checkpoint. A block that cannot run here (a Hub download,
a second model, a store on disk) says so in the page, right above it, with `<!-- not run: REASON -->`; the
reason is required and the list of such blocks is checked, so no block is skipped silently.
docs/migration.md has its own test (tests/test_migration_examples.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest

from hooked_reward import organisms

pytestmark = pytest.mark.slow  # runs every docs page's code blocks, as the docs build does

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    if p.name != "migration.md"
)
BLOCK = re.compile(r"(?:<!-- not run: (?P<reason>[^>]*?) -->\s*\n)?```python\n(?P<code>.*?)```", re.S)
PLACEHOLDERS = ("path/to/checkpoint", "path/to/rm", "path/to/reward-model")

#: Blocks that cannot run in a test, by page: the number each page marks `<!-- not run: ... -->`.
NOT_RUN = {
    "docs/index.md": 1,  # a Hub id
    "docs/extensions/conflict.md": 1,  # an ArmoRM checkpoint
    "docs/running-large-studies.md": 1,  # a store written by an earlier run
}


def blocks(page: str) -> list[tuple[str, str | None]]:
    """`(code, reason_not_run)` of every ```python block of `page`, in order."""
    text = (ROOT / page).read_text()
    return [(m["code"], m["reason"]) for m in BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def namespace() -> dict:
    model = organisms.load("sycophancy")
    rows = organisms.load_pairs("sycophancy")[:12]
    chosen = [organisms.render(r["prompt"], r["chosen"]) for r in rows]
    rejected = [organisms.render(r["prompt"], r["rejected"]) for r in rows]
    texts = chosen[:6] + rejected[:6]
    tokens, mask = model.tokenize(texts)
    return {
        "model": model,
        "texts": texts,
        "chosen": chosen[:4],
        "rejected": rejected[:4],
        "clean": chosen[0],
        "corrupt": rejected[0],
        "tokens": tokens,
        "mask": mask,
        "positive_texts": chosen,
        "negative_texts": rejected,
        "reference_texts": texts,
        "held_out_texts": chosen[6:] + rejected[6:],
        "rm_a": model,
        "rm_b": model,
    }


def test_every_page_is_collected() -> None:
    assert "README.md" in PAGES and "docs/extensions/cascade.md" in PAGES
    assert sum(len(blocks(p)) for p in PAGES) >= 20


def test_not_run_blocks_are_the_listed_ones() -> None:
    marked = {p: sum(reason is not None for _, reason in blocks(p)) for p in PAGES}
    assert {p: n for p, n in marked.items() if n} == NOT_RUN
    for page in PAGES:
        for _, reason in blocks(page):
            assert reason is None or reason.strip(), f"{page}: a `not run` marker without a reason"


#: Pages whose examples take over ~20 s on one CPU thread (a 2000-step SAE, a 10-factor probe suite).
SLOW = ("docs/tools/sae.md", "docs/tools/probes.md")


@pytest.mark.parametrize(
    "page", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW else p for p in PAGES if blocks(p)]
)
def test_every_docs_example_runs(page: str, namespace: dict, tmp_path: Path, monkeypatch) -> None:
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)  # examples that write (save_sae, reports) write here
    # the file docs/tools/probes.md reads its own pairs from
    row = '{{"factor": "my_factor", "prompt": "q", "biased": "yes !{i}", "neutral": "yes {i}"}}'
    (tmp_path / "my_pairs.jsonl").write_text("\n".join(row.format(i=i) for i in range(6)))
    ns = dict(namespace, __name__="docs_example")
    checkpoint = str(organisms.checkpoint_dir("sycophancy"))
    for i, (code, reason) in enumerate(blocks(page)):
        if reason is not None:
            continue
        for placeholder in PLACEHOLDERS:
            code = code.replace(f'"{placeholder}"', repr(checkpoint))
        try:
            exec(compile(code, f"{page} block {i}", "exec"), ns)
        except Exception as err:  # name the block that failed
            raise AssertionError(f"{page} code block {i} failed:\n{code}") from err
        finally:
            plt.close("all")
