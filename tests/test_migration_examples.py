"""docs/migration.md runs: every Python code block on the page, in order, in one namespace, on the organism; and
the page and notebook 04 both list every rename and every non-port of TransformerLens's demos (issue 23)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hooked_reward import organisms

ROOT = Path(__file__).resolve().parents[1]
MIGRATION = ROOT / "docs" / "migration.md"
NOTEBOOK = ROOT / "notebooks" / "04_porting_from_transformerlens.ipynb"

#: The TransformerLens usages of the four demos that change (renames) or do not port; both documents name each.
RENAMED = (
    "boot_transformers",
    "from_pretrained",
    "transformer_lens.utilities",
    "to_single_token",
    "signs",
    "W_U[:, answer_tokens]",
    "tokens_to_residual_directions",
    "logit_attrs",
    "reward_attrs",
    "W_R",
    "d_vocab",
)
NOT_PORTED = (
    'return_type="loss"',
    "loss_fn",
    "generate",
    "test_prompt",
    "softmax",
    "b_U",
    "eigenvalues",
    "refactor_factored_attn_matrices",
    "NoVocabularyError",
)


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.skipif(
    not (organisms.checkpoint_dir("sycophancy") / "config.json").exists(),
    reason="the sycophancy organism's weights are not in hooked_reward/organisms/weights/",
)
def test_every_migration_example_runs() -> None:
    blocks = python_blocks(MIGRATION.read_text())
    assert len(blocks) >= 5
    namespace: dict = {"__name__": "migration_examples"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/migration.md block {i}", "exec"), namespace)
        except Exception as err:  # name the block that failed
            raise AssertionError(f"docs/migration.md code block {i} failed:\n{block}") from err


def notebook_text() -> str:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells)


@pytest.mark.parametrize("document", ["docs/migration.md", "notebook 04"])
def test_every_rename_and_non_port_is_listed(document: str) -> None:
    text = MIGRATION.read_text() if document == "docs/migration.md" else notebook_text()
    missing = [usage for usage in RENAMED + NOT_PORTED if usage not in text]
    assert not missing, f"{document} does not mention {missing}"
