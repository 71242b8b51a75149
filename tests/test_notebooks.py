"""The notebooks run top to bottom (kernel `python3`, CPU) without errors and render at least one plot each.

Notebooks are stored without outputs; this test executes them in memory and writes nothing back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to run the notebooks (the [test] extra)")
nbclient = pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks (the [test] extra)")
pytest.importorskip("ipykernel", reason="ipykernel is needed to run the notebooks (the [test] extra)")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 240
BUDGET_S = 240  # each notebook should take well under 2 minutes on a laptop CPU; this is a loose ceiling


def _organism_available() -> bool:
    from hooked_reward import organisms

    return (organisms.checkpoint_dir("sycophancy") / "config.json").exists()


def test_notebooks_exist() -> None:
    names = {p.name for p in NOTEBOOKS}
    for expected in (
        "01_main_demo.ipynb",
        "02_exploratory_analysis.ipynb",
        "03_activation_patching.ipynb",
        "04_porting_from_transformerlens.ipynb",
    ):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name} cell {i} has stored outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    if not _organism_available():
        pytest.skip("the sycophancy organism's weights are not in hooked_reward/organisms/weights/")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    start = time.time()
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails
    elapsed = time.time() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})
    ]
    assert images, f"{path.name} rendered no plot"
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if "IProgress" in str(o.get("text", ""))], "tqdm's IProgress warning"
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], (
        "widget outputs (they need JavaScript from a CDN in the rendered docs)"
    )
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s"
