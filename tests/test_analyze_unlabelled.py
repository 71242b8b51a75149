"""analyze on unlabelled pairs (issue 36 items 4-5): grouped by their dominant head, restores beside removes, token
views over the largest-margin pairs, on the sycophancy organism whose card plants sentiment in L0H0 and sycophancy
in L0H2."""

from __future__ import annotations

import json

import pytest
import torch

from hooked_reward import organisms
from hooked_reward.pairs import PreferencePair, as_pairs
from hooked_reward.study.analyze import analyze


@pytest.mark.slow
def test_unlabelled_pairs_split_into_the_planted_mechanisms(tmp_path) -> None:
    model = organisms.load("sycophancy")
    bundled = organisms.load_pairs("sycophancy")
    chosen = [p for p in bundled if p["mechanism"] == "sentiment"][:4] + [
        p for p in bundled if p["mechanism"] == "sycophancy"
    ][:4]
    pairs = []
    for p in as_pairs(chosen, where="organism pairs"):
        r = p.rendered(model, render=organisms.render)
        pairs.append(PreferencePair("", r.chosen, r.rejected, None))  # the labels dropped
    analyze(model, pairs, tmp_path / "r", causal="exact", progress=False)
    results = json.loads((tmp_path / "r" / "report.json").read_text())["results"]
    grouping = results["grouping"]
    assert grouping["split"] and grouping["dominant"] == ["L0H0"] * 4 + ["L0H2"] * 4  # the card's heads
    necessity = results["necessity_unlabelled: L0H2"]["head"]
    top = necessity[0]
    assert top["component"] == "L0H2"
    # restores and removes of L0H2 on the group's pairs, by hand with TransformerLens hooks on hook_z
    hook = "blocks.0.attn.hook_z"
    restores, removes = [], []
    with torch.no_grad():
        for p in pairs[4:]:
            rc, rr = float(model([p.chosen])[0]), float(model([p.rejected])[0])
            _, cc = model.run_with_cache([p.chosen], names_filter=[hook])
            _, cr = model.run_with_cache([p.rejected], names_filter=[hook])
            n = min(cc[hook].shape[1], cr[hook].shape[1])

            def put(source, n=n):
                def fn(act, hook):
                    out = act.clone()
                    out[:, -n:, 2] = source[:, -n:, 2]  # aligned at the reward end
                    return out

                return fn

            restores.append(
                (float(model.run_with_hooks([p.rejected], fwd_hooks=[(hook, put(cc[hook]))])[0]) - rr) / (rc - rr)
            )
            removes.append(
                (rc - float(model.run_with_hooks([p.chosen], fwd_hooks=[(hook, put(cr[hook]))])[0])) / (rc - rr)
            )
    assert top["restores"] == pytest.approx(sum(restores) / 4, abs=1e-4)
    assert top["removes"] == pytest.approx(sum(removes) / 4, abs=1e-4)
    html = (tmp_path / "r" / "index.html").read_text()
    assert "restores and removes" in html and "Unlabelled pairs, grouped" in html
    assert html.count("<em>pair ") == 2 * 3  # three token views (largest margins) per group
