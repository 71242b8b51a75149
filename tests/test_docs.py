"""The documentation site builds in strict mode (broken links, missing nav pages and API errors fail), and the
hook-point page lists every hook of a real model."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="mkdocs and mkdocstrings[python] are not installed (pip install -e .[docs])",
)
@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(tmp_path / "site"),
    ]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    for page in ("index.html", "concepts/index.html", "hooks/index.html", "migration/index.html", "api/index.html"):
        assert (site / page).exists(), page
    assert (site / "cli" / "index.html").exists()
    # Every asset is served from the site itself: no script, stylesheet or font from a CDN.
    external = re.compile(r"<(?:script|link|img)\b[^>]*?(?:src|href)=[\"']((?:https?:)?//[^\"']+)", re.I)
    for page in site.rglob("*.html"):
        found = [u for u in external.findall(page.read_text(errors="replace")) if not u.endswith(("/", ".html"))]
        assert not found, f"{page.relative_to(site)} loads {found[:3]}"
    # The notebooks are rendered executed (outputs and plots), without widget or IProgress warnings.
    for name in (
        "01_main_demo",
        "02_exploratory_analysis",
        "03_activation_patching",
        "04_porting_from_transformerlens",
    ):
        html = (site / "notebooks" / name / "index.html").read_text()
        assert "jp-OutputArea-output" in html and "data:image/png;base64" in html, name
        assert "IProgress" not in html and "widget-view+json" not in html, name
    assert "CircuitsVis.render" in (site / "notebooks" / "02_exploratory_analysis" / "index.html").read_text()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in (
        "HookedRewardModel",
        "RewardActivationCache",
        "reward_lens",
        "direct_reward_attribution",
        "patch_resid",
    ):
        assert name in api, f"API reference lacks {name}"


def test_hooks_page_lists_every_hook() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from hooked_reward import HookedRewardModel

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = HookedRewardModel.from_hf_model(LlamaForSequenceClassification(config).eval())
    page = (ROOT / "docs" / "hooks.md").read_text()
    names = {re.sub(r"blocks\.\d+\.", "blocks.{l}.", name) for name in model.hook_dict}
    missing = sorted(n for n in names if f"`{n}`" not in page)
    assert not missing, f"docs/hooks.md lacks {missing}"
