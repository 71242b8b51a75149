"""Every analysis returns a LabeledTensor: named dims matching the values, labels per dim, a DataFrame,
`plot(ax=None) -> Axes` drawing on the ax given, and `to_json()` that strict JSON can write."""

from __future__ import annotations

import json
import math
import random

import matplotlib
import numpy as np
import pytest
import torch
from conftest import WORDS, build_hf_model, load_tiny

from hooked_reward.analysis.results import LabeledTensor, jsonable

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

CLEAN, CORRUPT = "the cat is very good", "the dog is not bad"


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(n)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.set_num_threads(1)
    return load_tiny(build_hf_model("gpt2"), tmp_path_factory.mktemp("contract"))


def _results(model) -> dict[str, LabeledTensor]:
    from hooked_reward.analysis.attribution import direct_reward_attribution, pair_reward_attribution
    from hooked_reward.analysis.attribution_patching import attribution_patch
    from hooked_reward.analysis.circuits import (
        circuit_faithfulness,
        edge_agreement,
        edge_attribution,
        exact_edge_effects,
        faithfulness_curve,
    )
    from hooked_reward.analysis.compare import compare_models
    from hooked_reward.analysis.extensions import (
        cascade_from_items,
        conflict_analysis,
        distortion_from_margins,
        dose_response,
        fit_concept,
    )
    from hooked_reward.analysis.extensions.divergence import DivergenceResult
    from hooked_reward.analysis.faithfulness import faithfulness_study, recovery_control
    from hooked_reward.analysis.lens import reward_lens
    from hooked_reward.analysis.patching import patch_block_outputs
    from hooked_reward.analysis.path_patching import path_patch
    from hooked_reward.analysis.probes import default_factors, run_probe_suite
    from hooked_reward.analysis.probes.suite import localise_factor
    from hooked_reward.sae import attribute_features, check_attribution, splice_report, train_topk_sae

    texts = _texts(8)
    pairs = [("the cat is very good", "the cat is not good"), ("a dog is good", "a dog is bad")]
    rng = np.random.default_rng(0)
    sae = train_topk_sae(model, _texts(20), "blocks.1.hook_resid_post", d_sae=16, k=2, steps=10, progress=False)
    att = attribute_features(model, sae, texts[:4])
    concept = fit_concept(model, texts[:4], texts[4:], name="c", n_boot=99)
    probes = run_probe_suite(
        model, factors=["flattery"], n_pairs=6, n_boot=99, progress=False, localise=False, min_effect=0.1
    )
    edge_scores = edge_attribution(model, pairs, "eap-ig", steps=2, progress=False)
    return {
        "edge_attribution": edge_scores,
        "circuit_faithfulness": circuit_faithfulness(model, pairs, edge_scores.top(5), progress=False),
        "faithfulness_curve": faithfulness_curve(model, pairs, edge_scores, sizes=[0, 5, 20], progress=False),
        "edge_agreement": edge_agreement(edge_scores, exact_edge_effects(model, pairs, edge_scores.top(6))),
        "attribution": direct_reward_attribution(model, texts[:3], progress=False),
        "pair_attribution": pair_reward_attribution(model, texts[:2], texts[2:4], progress=False),
        "lens": reward_lens(model, texts[:3], progress=False),
        "patching": patch_block_outputs(model, CLEAN, CORRUPT, progress=False),
        "path_patching": path_patch(model, CLEAN, CORRUPT, progress=False),
        "attribution_patching": attribution_patch(model, CLEAN, CORRUPT),
        "faithfulness": faithfulness_study(model, pairs * 2, n_resamples=99, progress=False),
        "recovery": recovery_control(model, pairs, n_null=1),
        "compare": compare_models(
            model,
            model,
            [("", a, b) for a, b in zip(texts[:4], texts[4:], strict=True)],
            n_boot=99,
            n_boot_geometry=10,
            progress=False,
        ),
        "probes": probes,
        "factor_stats": probes.stats[0],
        "localisation": localise_factor(model, default_factors()["flattery"].pairs(4, 0), heads=True),
        "cascade": cascade_from_items({k: rng.normal(size=(5, 6)) for k in "abc"}, n_perm=19, n_boot=99),
        "conflict": conflict_analysis(
            model, texts, directions=torch.randn(2, model.cfg.d_model), names=["x", "y"], n_boot=20
        ),
        "distortion": distortion_from_margins({"a": rng.normal(size=6), "b": rng.normal(size=6) + 1}, n_boot=99),
        "divergence": DivergenceResult(
            names=["clean", "zero"],
            scores=rng.random((2, 4)),
            reward_change=rng.normal(size=(2, 4)),
            thresholds=np.array([0.5, 0.5]),
            from_layer=[0, 1],
        ),
        "concept": concept,
        "dose_response": dose_response(model, concept, texts[:3], n_boot=99),
        "sae_attribution": att,
        "sae_check": check_attribution(model, sae, att, top_k=3),
        "sae_splice": splice_report(model, sae, texts[:3]),
    }


def test_every_result_keeps_the_contract(model):
    results = _results(model)
    for name, res in results.items():
        assert isinstance(res, LabeledTensor), name
        assert len(res.dims) == res.values.ndim and len(set(res.dims)) == len(res.dims), name
        for dim, labels in res.labels.items():
            assert len(labels) == res.values.shape[res.dims.index(dim)], (name, dim)
        frame = res.to_frame()
        assert len(frame) > 0, name
        _, ax = plt.subplots()
        assert res.plot(ax=ax) is ax, name  # draws on the ax given, returns it
        assert ax.has_data() or ax.images or ax.patches, name
        fresh = res.plot()
        assert isinstance(fresh, Axes), name
        plt.close("all")
        data = res.to_json()
        text = json.dumps(data, allow_nan=False)  # strict JSON: NaN/inf as strings
        back = json.loads(text)
        assert back["type"] == type(res).__name__ and back["dims"] == list(res.dims), name
        assert np.asarray(back["values"], dtype=object).shape == tuple(res.values.shape), name
        if hasattr(res, "plot_panels"):
            fig = res.plot_panels()
            assert isinstance(fig, Figure) and len(fig.axes) >= 1, name
            plt.close(fig)


def test_attribution_patching_has_a_site_axis_named_after_the_sites(model):
    from hooked_reward.analysis.attribution_patching import attribution_patch

    res = attribution_patch(model, CLEAN, CORRUPT, sites=("z", "resid_pre"))
    assert res.dims == ("site", "layer", "pos") and res.labels["site"] == ["z", "resid_pre"]
    assert res.head_values.shape == (model.cfg.n_layers, model.cfg.n_heads, 6)
    with pytest.raises(ValueError, match="No site 'mlp_out'"):
        res.sweep("mlp_out")


def test_jsonable_known_answer():
    t = torch.tensor([1.0, math.nan, -math.inf])
    assert jsonable({"a": t, "b": (np.float32(0.5), np.int64(3)), "c": math.inf}) == {
        "a": [1.0, "nan", "-inf"],
        "b": [0.5, 3],
        "c": "inf",
    }
    lt = LabeledTensor(torch.zeros(2, 3), ("x", "y"), {"x": ["p", "q"]}, "v", {"k": 1})
    assert lt.to_json() == {
        "type": "LabeledTensor",
        "value_name": "v",
        "dims": ["x", "y"],
        "labels": {"x": ["p", "q"], "y": [0, 1, 2]},
        "values": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        "meta": {"k": 1},
    }
