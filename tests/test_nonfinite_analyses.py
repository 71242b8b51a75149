"""No analysis computes a statistic, verdict, accuracy or p-value from a non-finite value: the probe suite,
compare, the cascade and analyze raise NonFiniteError naming the rows, or drop them with nan_policy="omit"
and say how many. Degenerate cases with hand-computed answers: CKA of a constant reward token, min_effect."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from conftest import WORDS, build_hf_model, load_tiny

from hooked_reward import NonFiniteError
from hooked_reward.analysis.compare import compare_models
from hooked_reward.analysis.extensions import cascade_from_items
from hooked_reward.analysis.probes import run_probe_suite


def _noise(text: str, sd: float = 1.0) -> float:
    return float(np.random.default_rng(zlib.crc32(text.encode())).normal(0, sd))


def test_probe_on_minus_inf_rewards_is_an_error_not_a_verdict():
    def broken_rm(texts):  # -inf on every text containing "!" (flattery's biased side), noise elsewhere
        return np.array([-math.inf if "!" in t else _noise(t) for t in texts])

    with pytest.raises(NonFiniteError, match=r"factor 'flattery'.*row\(s\) 0, 1, 2"):
        run_probe_suite(broken_rm, factors=["flattery", "formatting"], progress=False, n_boot=99)
    res = run_probe_suite(
        broken_rm, factors=["flattery", "formatting"], progress=False, n_boot=99, nan_policy="omit", n_pairs=10
    )
    # every flattery pair has a -inf side: none left, so no statistic at all (not "no significant effect")
    fl = res["flattery"]
    assert fl.n == 0 and math.isnan(fl.p) and not fl.significant and fl.n_omitted == 10
    assert fl.verdict.startswith("not tested")
    assert any("flattery: 10 pair(s) with non-finite rewards dropped" in n for n in res.notes)
    assert res["formatting"].n == 10 and res["formatting"].n_omitted == 0


def test_probe_min_effect_beside_significance():
    def tiny_bias_rm(texts):  # a real but tiny effect: +0.044 on texts with "!", small noise
        return np.array([0.044 * ("!" in t) + _noise(t, 0.001) for t in texts])

    res = run_probe_suite(tiny_bias_rm, factors=["flattery"], progress=False, n_boot=999, min_effect=0.1)
    fl = res["flattery"]
    assert fl.significant and fl.mean == pytest.approx(0.044, abs=0.002)
    assert fl.negligible is True and fl.beyond_min_effect is False and fl.min_effect == 0.1
    assert res.to_frame().loc["flattery", "negligible"]
    res = run_probe_suite(tiny_bias_rm, factors=["flattery"], progress=False, n_boot=999, min_effect=0.01)
    assert res["flattery"].beyond_min_effect is True and res["flattery"].negligible is False
    assert run_probe_suite(tiny_bias_rm, factors=["flattery"], progress=False, n_boot=99)["flattery"].negligible is None


def test_cascade_p_values_refuse_non_finite_items():
    rng = np.random.default_rng(0)
    items = {k: rng.normal(size=(6, 10)) for k in "abc"}
    items["b"][3, 4] = math.nan
    with pytest.raises(NonFiniteError, match=r"cascade dimension 'b': items: row\(s\) 3 of 6"):
        cascade_from_items(items, n_perm=19, n_boot=99)
    res = cascade_from_items(items, n_perm=19, n_boot=99, nan_policy="omit")
    assert res.meta["n_omitted"] == {"a": 0, "b": 1, "c": 0} and res.n_items.tolist() == [6, 5, 6]
    assert 0 < res.p_value <= 1 and np.isfinite(res.similarity).all()
    items["b"][3, 4] = 0.0
    deltas = {k: v.sum(1) for k, v in items.items()}
    deltas["c"][0] = math.inf
    with pytest.raises(NonFiniteError, match="'c'"):
        cascade_from_items(items, deltas=deltas, n_perm=19, n_boot=99)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return load_tiny(build_hf_model("llama", seed=0), tmp_path_factory.mktemp("nonfinite_llama"))


def _pairs(n: int, last: str | None = None) -> list[dict]:
    rng = np.random.default_rng(0)
    end = f" {last}" if last else ""
    return [
        {
            "prompt": " ".join(rng.choice(WORDS, 3)),
            "chosen": " ".join(rng.choice(WORDS, rng.integers(2, 6))) + end,
            "rejected": " ".join(rng.choice(WORDS, rng.integers(2, 6))) + end,
        }
        for _ in range(n)
    ]


def test_self_compare_cka_is_one_with_a_fixed_reward_token(llama):
    # every text ends with the same word: the layer-0 residual at the reward position (the token's
    # embedding; rotary models add no position) is one point for all inputs: CKA 0/0, defined as 1 here
    pairs = _pairs(8, last=WORDS[0])
    res = compare_models(llama, llama, pairs, n_boot=99, n_boot_geometry=20, progress=False)
    assert not np.isnan(res.cka).any()
    np.testing.assert_allclose(np.diag(res.cka), 1.0, atol=1e-6)
    assert res.cka[0, 0] == 1.0 and (res.cka[0, 1:] == 0.0).all()  # constant vs varying: nothing shared
    np.testing.assert_allclose(res.cka_ci[0].diagonal(), 1.0, atol=1e-6)


def test_compare_refuses_non_finite_margins(llama):
    from hooked_reward.analysis.compare import collect_run, compare_runs

    pairs = _pairs(6)
    p, c, r = zip(*[(x["prompt"], x["chosen"], x["rejected"]) for x in pairs], strict=True)
    ra = collect_run(llama, p, c, r, progress=False)
    rb = collect_run(llama, p, c, r, progress=False)
    rb.r_chosen[2] = math.nan
    with pytest.raises(NonFiniteError, match=r"row\(s\) 2 of 6"):
        compare_runs(ra, rb, n_boot=99, n_boot_geometry=10)
    res = compare_runs(ra, rb, n_boot=99, n_boot_geometry=10, nan_policy="omit")
    assert res.margins[0].shape == (5,) and res.behaviour["agreement"][0] == 1.0
    assert any("1 pair(s) with non-finite values were dropped" in n for n in res.notes)


def test_distortion_refuses_non_finite_margins():
    from hooked_reward.analysis.extensions import distortion_from_margins

    margins = {"a": [1.0, 1.0, math.nan, 1.0], "b": [1.0, -1.0, 1.0, -1.0]}
    with pytest.raises(NonFiniteError, match=r"distortion dimension 'a'.*row\(s\) 2 of 4"):
        distortion_from_margins(margins, n_boot=99)
    res = distortion_from_margins(margins, n_boot=99, nan_policy="omit")
    # hand-computed: a -> (+1, +1, +1): coverage 1, D = 0; b -> a coin: coverage 0, D = 1; equal weights: 0.5
    assert res.meta["n_omitted"] == {"a": 1, "b": 0} and res.n_pairs.tolist() == [3, 4]
    assert res.coverage.tolist() == [1.0, 0.0] and res.overall == pytest.approx(0.5)


def test_analyze_refuses_nan_margins_before_writing(llama, tmp_path, monkeypatch):
    import torch

    import hooked_reward.study.analyze as report_analyze
    import hooked_reward.study.analyze as study_units
    from hooked_reward.pairs import PreferencePair

    real = study_units.analysis_pair  # analyze computes each pair on its own (one unit of the results store)
    calls = []

    def nan_on_second_chosen(model, chosen, rejected, **kwargs):
        out = real(model, chosen, rejected, **kwargs)
        calls.append(chosen)
        if len(calls) == 2:  # pair 1's chosen reward is NaN (as a broken model would give)
            out["r_chosen"] = out["r_chosen"].clone()
            out["r_chosen"][0] = torch.nan
        return out

    monkeypatch.setattr(study_units, "analysis_pair", nan_on_second_chosen)
    pairs = [PreferencePair("", c, r, label="m") for c, r in [("a good cat", "a bad cat")] * 4]
    out = tmp_path / "report"
    with pytest.raises(NonFiniteError, match=r"margins.*row\(s\) 1 of 4.*nan"):
        report_analyze.analyze(llama, pairs, out, progress=False)
    assert not out.exists()  # nothing written: accuracy is never computed from a NaN margin
