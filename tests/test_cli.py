"""The main job: `hooked-reward demo` and `analyze` write an HTML report with PNG plots and a JSON of numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hooked_reward import HookedRewardModel, organisms
from hooked_reward.cli import main
from hooked_reward.errors import InputError
from hooked_reward.report import SCHEMA, Report, safe_name
from hooked_reward.report.html import MARKER


@pytest.mark.slow  # a whole demo report, end to end
def test_demo_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-pairs", "12", "--quiet"]) == 0
    for name in ["index.html", "report.json", "lens.png", "attribution_head.png", "attribution_component.png"]:
        assert (out / name).exists(), name
    assert len(list(out.glob("dra_vs_patching_*.png"))) == 3, "DRA and patching per mechanism"
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == SCHEMA and report["command"] == "demo"
    assert report["provenance"]["organism"] == "sycophancy"
    data = report["results"]
    by_mech = {row["mechanism"]: row for row in data["behaviour"]}
    assert set(by_mech) == {"sentiment", "length", "sycophancy"}
    card = organisms.card("sycophancy")
    for mech, row in by_mech.items():
        assert row["accuracy"] >= card["accuracy"][mech] - 0.25  # 4 pairs each: the card's rate, up to one miss
    # The lens's last point (both variants) is the mean margin itself.
    curves = data["lens"]["curves"]
    for mech, row in by_mech.items():
        for variant in ("frozen", "recomputed"):
            assert curves[f"{variant}/{mech}"][-1] == pytest.approx(row["mean margin"], abs=1e-4)


@pytest.mark.slow  # a whole analyze report through the CLI
def test_analyze_user_checkpoint_and_pairs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    records = organisms.load_pairs("sycophancy")[:3] + organisms.load_pairs("sycophancy")[-3:]
    pairs.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "analyze"
    code = main(
        [
            "analyze",
            "--model",
            str(organisms.checkpoint_dir("sycophancy")),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0 and (out / "index.html").exists()


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    code = main(
        [
            "analyze",
            "--model",
            str(organisms.checkpoint_dir("sycophancy")),
            "--pairs",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "chosen" in capsys.readouterr().err


@pytest.mark.slow  # a whole demo report, end to end
def test_demo_finds_the_planted_head(tmp_path: Path) -> None:
    """The sycophancy organism's card plants its mechanism in head L0H2: patching (over all pairs) ranks it first
    and restores most of the margin, DRA does not (it acts through the MLPs); the report's table says so."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--max-pairs", "24", "--quiet"]) == 0
    data = json.loads((out / "report.json").read_text())["results"]
    rows = [
        r
        for r in data["found_vs_planted"]
        if r["mechanism"] == "sycophancy" and r["planted (model card)"].startswith("L0H2")
    ]
    assert len(rows) == 1 and rows[0]["rank by patching"] == "1 of 8" and rows[0]["found by patching"] == "yes"
    heads = data["agreement"]["sycophancy"]["head"]
    i = heads["labels"].index("L0H2")
    margin = next(r["mean margin"] for r in data["behaviour"] if r["mechanism"] == "sycophancy")
    assert heads["patching_mean"][i] > 0.8 * margin  # patching L0H2 alone restores most of the margin
    assert abs(heads["dra_mean"][i]) < 0.2 * margin  # its direct write is small
    assert len(heads["dra"]) == 8  # aggregated over every sycophancy pair, not the first one
    assert data["circuit_sycophancy"]["top_heads"][0] == "L0H2"
    html = (out / "index.html").read_text()
    assert "Found vs planted" in html and "L0H2 (blocks.0.attn.head.2)" in html
    assert "(issue" not in html and "[" + "'" not in html  # no internal references, no Python list reprs


def _fail(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model must not be loaded when --out is unusable")


def test_cli_checks_output_before_work(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import hooked_reward.cli as cli

    monkeypatch.setattr(cli, "_load_model", _fail)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["demo", "--out", str(a_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and str(a_file) in err and len(err.strip().splitlines()) == 1
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(busy), "--quiet"]) == 2
    assert "not a report of ours" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["demo", "--out", str(locked / "r"), "--quiet"]) == 2
        assert "not writable" in capsys.readouterr().err


def test_cli_unexpected_error_is_short(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import hooked_reward.cli as cli

    def boom(*args: object) -> None:
        raise RuntimeError("something broke\ninside")

    monkeypatch.setattr(cli, "_load_model", boom)
    assert main(["demo", "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: something broke inside" in err and "Traceback" not in err and "--debug" in err
    with pytest.raises(RuntimeError):
        main(["demo", "--out", str(tmp_path / "o"), "--quiet", "--debug"])
    monkeypatch.setattr(cli, "_load_model", lambda *a: (_ for _ in ()).throw(InputError("bad thing 'x'")))
    assert main(["demo", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "hooked-reward demo: error: bad thing 'x'"
    assert not (tmp_path / "o").exists()


def test_report_is_atomic(tmp_path: Path) -> None:
    """A report replaces its folder entirely, and an interrupted one leaves the previous report untouched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = tmp_path / "rep"
    with Report(out, "first") as report:
        report.add_figure("a", plt.figure(), "old_plot")
        report.add_data("n", 1)
        report.write()
    assert (out / "old_plot.png").exists()
    with pytest.raises(KeyboardInterrupt), Report(out, "second") as report:
        report.add_figure("b", plt.figure(), "new_plot")
        raise KeyboardInterrupt
    listing = [MARKER, "index.html", "old_plot.png", "report.json"]
    assert sorted(p.name for p in out.iterdir()) == listing
    assert json.loads((out / "report.json").read_text())["title"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]  # no temporary folder left behind
    with Report(out, "third") as report:
        report.add_figure("c", plt.figure(), "new_plot")
        report.write()
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "index.html", "new_plot.png", "report.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


@pytest.mark.slow  # a whole analyze report through the CLI
def test_labels_become_safe_file_names(tmp_path: Path) -> None:
    taken: set[str] = set()
    assert safe_name("a/b", taken) == "a_b"
    assert safe_name("a b", taken) == "a_b_2"  # unique
    assert safe_name("../..", taken) == "item"
    pairs = tmp_path / "pairs.jsonl"
    records = organisms.load_pairs("sycophancy")[:3] + organisms.load_pairs("sycophancy")[-3:]
    for r, label in zip(records, ["x/y", "x/y", "x/y", "../up", "../up", "../up"], strict=True):
        r["mechanism"] = label
    pairs.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "out"
    code = main(
        [
            "analyze",
            "--model",
            str(organisms.checkpoint_dir("sycophancy")),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    assert (out / "dra_vs_patching_x_y.png").exists() and (out / "dra_vs_patching_up.png").exists()
    assert all(p.parent == out for p in out.rglob("*")) and not (tmp_path / "up").exists()


def test_sae_probe_and_compare_errors_are_library_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    """SAE, probes and compare raise the error family (so the CLI answers them with one line and exit 2)."""
    import hooked_reward.cli as cli
    from hooked_reward.analysis.probes import run_probe_suite
    from hooked_reward.errors import HookedRewardError
    from hooked_reward.sae.autoencoder import SAEConfig

    with pytest.raises(HookedRewardError, match="Unknown SAE architecture"):
        SAEConfig(architecture="nope", d_in=4, d_sae=8)
    with pytest.raises(HookedRewardError):
        run_probe_suite(lambda texts: [0.0] * len(texts), factors=["no_such_factor"], n_pairs=4, progress=False)

    def bad_sae(*args: object) -> None:
        SAEConfig(architecture="topk", d_in=4, d_sae=8, k=0)

    monkeypatch.setattr(cli, "_load_model", bad_sae)
    assert main(["demo", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hooked-reward demo: error: ") and "k" in err and "\n" not in err


def test_probe_takes_a_minimum_effect(tmp_path: Path, monkeypatch) -> None:
    """`probe --min-effect δ` reaches run_probe_suite; the report's factor rows carry the CI-vs-δ verdicts."""
    import numpy as np

    import hooked_reward.analysis.probes as probes
    import hooked_reward.cli as cli
    import hooked_reward.study.probe as study_units

    def tiny_bias_rm(texts):  # +0.044 on texts with "!", nothing else: significant, but below δ = 0.1
        return np.array([0.044 * ("!" in t) for t in texts])

    real = probes.run_probe_suite
    seen: dict[str, object] = {}

    def run(study, model, **kwargs):  # the CLI runs the suite through the results store (study_units)
        seen.update(kwargs)
        return real(
            tiny_bias_rm,
            factors=["flattery"],
            n_pairs=kwargs["n_pairs"],
            n_boot=99,
            progress=False,
            min_effect=kwargs["min_effect"],
        )

    monkeypatch.setattr(cli, "_load_model", lambda name, which="model": (object(), None, False))
    monkeypatch.setattr(cli, "_open_study", lambda *args, **kwargs: None)
    monkeypatch.setattr(cli, "_study_provenance", lambda args, model, study: {"model": "stand-in"})
    monkeypatch.setattr(study_units, "probe_results", run)
    out = tmp_path / "probe"
    assert main(["probe", "--out", str(out), "--n-pairs", "8", "--min-effect", "0.1", "--quiet"]) == 0
    assert seen["min_effect"] == 0.1
    row = json.loads((out / "report.json").read_text())["results"]["probes"]["factors"][0]
    assert row["significant"] and row["negligible"] is True and row["beyond_min_effect"] is False
    assert "smaller (negligible)" in (out / "index.html").read_text()


def test_max_pairs_means_at_most_n_balanced_over_labels(tmp_path, capsys, make_checkpoint):
    """`--max-pairs N` takes at most N pairs (before: 3 when asked for 2 of 3 labels, 5 of 12 with uneven labels),
    labels taking turns in file order; the number used is printed (and is the report's n_pairs)."""
    import argparse

    from hooked_reward.cli import _pairs, balanced_subset
    from hooked_reward.pairs import PreferencePair

    def pp(label, i):
        return PreferencePair("", f"good {label} {i}", f"bad {label} {i}", label)

    uneven = [pp("a", i) for i in range(8)] + [pp("b", i) for i in range(3)] + [pp("c", 0)]  # 12 pairs, 8/3/1
    picked = balanced_subset(uneven, 5)  # turns: a, b, c, a, b
    assert [(p.label, p.chosen) for p in picked] == [
        ("a", "good a 0"),
        ("a", "good a 1"),
        ("b", "good b 0"),
        ("b", "good b 1"),
        ("c", "good c 0"),
    ]
    assert len(balanced_subset(uneven, 2)) == 2 and {p.label for p in balanced_subset(uneven, 2)} == {"a", "b"}
    assert [p.label for p in balanced_subset(uneven, 9)].count("a") == 5  # c runs out: a and b fill its share
    assert balanced_subset(uneven, 50) == uneven
    three = [pp("x", 0), pp("y", 0), pp("z", 0)]
    assert len(balanced_subset(three, 2)) == 2  # at most N, never one per label regardless
    even = [pp(k, i) for k in "ab" for i in range(5)]
    assert balanced_subset(even, 4) == even[:2] + even[5:7]  # the first N/labels of each, as before

    model = HookedRewardModel.from_pretrained(make_checkpoint("llama"))
    rows = [{"prompt": "", "chosen": p.chosen, "rejected": p.rejected, "label": p.label} for p in uneven]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    args = argparse.Namespace(pairs=str(path), max_pairs=5, rendering="chat")
    assert len(_pairs(args, None, model, None)) == 5
    assert "--max-pairs 5: using 5 of 12 pairs" in capsys.readouterr().err
