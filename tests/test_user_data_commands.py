"""`probe --pairs` and `extensions --pairs` on a user's labelled file (issue 36 item 3), and the out-of-domain caveat
of the built-in probes on a model of another vocabulary."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import build_hf_model, word_tokenizer

from hooked_reward.cli import main

WORDS = "the a cat dog is was very not answer question".split()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny Llama with the test's word-level tokenizer: a vocabulary the built-in English probes fall outside."""
    out = tmp_path_factory.mktemp("user") / "ckpt"
    build_hf_model("llama", seed=4).save_pretrained(out)
    word_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    """Labelled pairs in the checkpoint's vocabulary: two attributes, 12 pairs each."""
    rng = random.Random(0)
    rows = []
    for label, (good, bad) in {"praise": ("good great", "bad awful"), "politeness": ("please thanks", "no no")}.items():
        for _ in range(12):
            stem = " ".join(rng.choice(WORDS) for _ in range(4))
            rows.append({"prompt": "", "chosen": f"{stem} {good}", "rejected": f"{stem} {bad}", "mechanism": label})
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _results(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())["results"]


def test_probe_pairs_makes_one_factor_per_label_and_marks_builtin_out_of_domain(checkpoint, pairs_file, tmp_path):
    out = tmp_path / "probe"
    argv = ["probe", "--model", str(checkpoint), "--pairs", str(pairs_file), "--builtin", "--n-pairs", "6"]
    assert main([*argv, "--out", str(out), "--quiet", "--no-resume"]) == 0
    factors = {f["factor"]: f for f in _results(out)["probes"]["factors"]}
    assert {"praise", "politeness"} <= set(factors)
    assert all(f["n"] == 12 for name, f in factors.items() if name in ("praise", "politeness"))
    builtin = [f for name, f in factors.items() if name not in ("praise", "politeness")]
    assert builtin and all(f["verdict"].endswith("(out of domain)") for f in builtin)
    assert not any(factors[name]["verdict"].endswith("(out of domain)") for name in ("praise", "politeness"))
    html = (out / "index.html").read_text()
    assert "Out of the model" in html and "unknown to the tokenizer" in html


def test_probe_without_pairs_still_checks_the_domain(checkpoint, tmp_path):
    out = tmp_path / "probe"
    assert main(["probe", "--model", str(checkpoint), "--n-pairs", "4", "--out", str(out), "--quiet"]) == 0
    assert "unknown to the tokenizer" in (out / "index.html").read_text()


@pytest.mark.slow
def test_extensions_pairs_reads_the_labels_as_dimensions(checkpoint, pairs_file, tmp_path):
    out = tmp_path / "ext"
    assert (
        main(["extensions", "--model", str(checkpoint), "--pairs", str(pairs_file), "--out", str(out), "--quiet"]) == 0
    )
    text = json.dumps(_results(out))
    assert "praise" in text and "politeness" in text
    assert "alignment_faking" not in text  # the templates' dimensions are not used, the cascade's included
