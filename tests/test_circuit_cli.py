"""`hooked-reward circuit`: the report holds both methods' scores, exact edge patching of their top edges, the
faithfulness curves and the circuit drawn; a second run resumes from the store (no unit computed twice), and
`--method` only changes which circuit is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hooked_reward.cli import main
from hooked_reward.study.store import read_records, store_root


def _numbers(out: Path) -> dict:
    data = json.loads((out / "report.json").read_text())
    data.pop("provenance", None)
    return data["results"]


def _stored(out: Path) -> int:
    return sum(len(list(read_records(p))) for p in store_root(out).glob("*/rank-*.jsonl"))


def _mean(result: dict) -> torch.Tensor:
    return torch.tensor(result["values"], dtype=torch.float64).mean(0)


def test_circuit_command_report_resume_and_method(tmp_path: Path) -> None:
    out = tmp_path / "circuit"
    args = ["circuit", "--max-pairs", "3", "--top-k", "5", "--steps", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    results = _numbers(out)
    scores, exact, curves = results["scores"], results["exact"], results["curves"]
    edges = scores["eap-ig"]["labels"]["edge"]
    top = [edges[i] for i in torch.argsort(_mean(scores["eap-ig"]).abs(), descending=True, stable=True)[:5]]
    assert results["circuit"] == top  # the drawn circuit is EAP-IG's top 5 by |mean score|
    checked = set(exact["labels"]["edge"])
    assert set(top) <= checked and len(checked) <= 10  # the union of both methods' top 5
    for method in ("eap-ig", "eap"):
        values = curves[method]["values"]
        sizes = curves[method]["sizes"]
        assert sizes[0] == 0 and sizes[-1] == len(edges) and 5 in sizes
        assert abs(values[0]) < 1e-5 and abs(values[-1] - 1) < 1e-5  # nothing kept / everything kept
        assert -1 <= results["agreements"][method]["rho"] <= 1
    page = (out / "index.html").read_text()
    assert "circuit.png" in page and "faithfulness_curves.png" in page and "Spearman" in page
    stored = _stored(out)
    assert stored == 2 * 3  # two passes over three pairs

    assert main(args) == 0  # resumed: nothing computed again, the same numbers
    assert _stored(out) == stored
    assert _numbers(out) == results

    assert main([*args, "--method", "eap"]) == 0  # the method drawn is not a setting: the store is reused
    assert _stored(out) == stored
    eap = _numbers(out)
    top_eap = [edges[i] for i in torch.argsort(_mean(eap["scores"]["eap"]).abs(), descending=True, stable=True)[:5]]
    assert eap["circuit"] == top_eap
