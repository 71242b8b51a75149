"""Circuits of a reward (`analysis.circuits`): known answers for the graph, edge attribution and edge patching.

* EAP's score of an edge equals d r / d ε of the run where the receiver's input gets ε · (the sender's rejected −
  chosen output), computed here by autograd on ε with the sender outputs rebuilt from `hook_z` and `W_O`;
* patching every edge gives the rejected run's reward, none the chosen run's (to 1e-5, against the plain forward);
* patching every edge out of one sender equals patching that sender's node output (`analysis.patching`);
* EAP-IG is complete: the embedding's edges sum to r(rejected) − r(chosen) (integrated gradients);
* on the sycophancy organism, EAP-IG finds a circuit containing `L0H2->reward` that keeps >= 80% of the margin, and
  agrees with exact edge patching at least as well as EAP;
* the ArmoRM organism (gate and transform) runs through the same code, with the same known answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward import organisms
from hooked_reward.analysis import circuits as C
from hooked_reward.analysis.patch_spec import PatchSpec
from hooked_reward.analysis.patching import Patch, patch_hooks
from hooked_reward.errors import InputError, UnsupportedArchitectureError
from hooked_reward.names import act_name

SEED_TOKENS = 5


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory):
    """Tiny Llama with grouped-query attention (4 query heads, 2 key-value heads), 2 layers."""
    return load_tiny(build_hf_model("llama", seed=3), tmp_path_factory.mktemp("circuits-llama"))


def token_pair(n: int = 9, seed: int = SEED_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """An equal-length (chosen, rejected) pair of token rows differing at two positions."""
    torch.manual_seed(seed)
    chosen = torch.randint(4, 90, (n,))
    rejected = chosen.clone()
    rejected[2], rejected[n - 3] = 7, 11
    return chosen, rejected


def plain_reward(model, row: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(row[None])[0])


def test_graph_nodes_edges_and_labels(llama):
    graph = C.circuit_graph(llama)
    n_layers, n_heads, n_kv = 2, 4, 2
    n_edges = 0
    for layer in range(n_layers):
        before = 1 + layer * (n_heads + 1)  # embed and the heads and MLPs of earlier layers
        n_edges += (n_heads + 2 * n_kv) * before + (before + n_heads)  # q, k, v receivers; the MLP
    n_edges += 1 + n_layers * (n_heads + 1)  # into the reward
    assert graph.n_edges == n_edges == 82
    labels = {str(e) for e in graph.edges}
    for label in ("L0H2->L1H0.q", "L0H2->reward", "embed->L0MLP", "L1MLP->reward", "L0MLP->L1H1.v", "embed->L0H3.q"):
        assert label in labels
    assert "L0H2->L1H3.k" not in labels  # two key-value heads
    assert "L1H0->L0MLP" not in labels and "L1MLP->L1H0.q" not in labels  # edges point forward only
    edge = graph.edges[graph.index(["L0H2->L1H0.q"])[0]]
    assert (edge.sender.kind, edge.sender.layer, edge.sender.index) == ("head", 0, 2)
    assert (edge.receiver.layer, edge.receiver.index, edge.input) == (1, 0, "q")
    with pytest.raises(InputError, match="Unknown edge"):
        graph.index(["L9H9->reward"])


def test_patching_every_edge_gives_rejected_and_none_gives_chosen(llama):
    chosen, rejected = token_pair()
    graph = C.circuit_graph(llama)
    assert C.patch_edges(llama, (chosen, rejected), []) == pytest.approx(plain_reward(llama, chosen), abs=1e-5)
    assert C.patch_edges(llama, (chosen, rejected), graph.edges) == pytest.approx(
        plain_reward(llama, rejected), abs=1e-5
    )
    # the model's own hook settings are back as they were
    assert not llama.cfg.use_split_qkv_input and not llama.cfg.use_attn_result and not llama.cfg.use_hook_mlp_in


@pytest.mark.parametrize(
    ("sender", "site"),
    [
        ("L0H1", Patch(act_name("z", 0), None, 1)),
        ("L0MLP", Patch(act_name("mlp_out", 0))),
        ("L1H3", Patch(act_name("z", 1), None, 3)),
        ("embed", Patch(act_name("embed"))),
    ],
)
def test_patching_one_senders_edges_equals_patching_its_node(llama, sender, site):
    chosen, rejected = token_pair()
    graph = C.circuit_graph(llama)
    edges = [e for e in graph.edges if str(e).split("->")[0] == sender]
    node = patch_hooks(llama, chosen, rejected, {sender: site}, mode="noise", progress=False)
    assert C.patch_edges(llama, (chosen, rejected), edges) == pytest.approx(float(node.rewards[0]), abs=1e-5)


def first_order_by_hand(model, chosen, rejected, edges) -> list[float]:
    """d r(chosen) / d ε with ε · (sender output on rejected − on chosen) added to the receiver's input, by autograd
    on ε. Sender outputs are rebuilt here: a head's `z_h W_O[h]` from `hook_z`, the MLP's `hook_mlp_out`, the
    embedding's `hook_embed`; receivers are TransformerLens's split-input hooks."""
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    try:
        n_layers = model.cfg.n_layers
        names = [act_name("embed")] + [act_name(k, layer) for layer in range(n_layers) for k in ("z", "mlp_out")]
        with torch.no_grad():
            _, cache_c = model.run_with_cache(chosen[None], names_filter=names)
            _, cache_r = model.run_with_cache(rejected[None], names_filter=names)

        def output(cache, node) -> torch.Tensor:
            if node.kind == "embed":
                return cache[act_name("embed")][0]
            if node.kind == "mlp_out":
                return cache[act_name("mlp_out", node.layer)][0]
            z = cache[act_name("z", node.layer)][0, :, node.index]
            return z @ model.W_O[node.layer, node.index].detach()

        out = []
        for edge in edges:
            diff = output(cache_r, edge.sender) - output(cache_c, edge.sender)
            eps = torch.zeros((), requires_grad=True)
            if edge.receiver is None:
                hook = act_name("resid_post", n_layers - 1)
            elif edge.receiver.kind == "mlp_out":
                hook = act_name("mlp_in", edge.receiver.layer)
            else:
                hook = act_name(f"{edge.input}_input", edge.receiver.layer)

            def add(act, hook, edge=edge, diff=diff, eps=eps):
                if act.ndim == 4:
                    act = act.clone()
                    act[0, :, edge.receiver.index] = act[0, :, edge.receiver.index] + eps * diff
                    return act
                return act + eps * diff

            with torch.enable_grad():
                r = model.run_with_hooks(chosen[None], fwd_hooks=[(hook, add)])[0]
                out.append(float(torch.autograd.grad(r, eps)[0]))
        return out
    finally:
        model.set_use_split_qkv_input(False)
        model.set_use_hook_mlp_in(False)


def test_eap_equals_a_first_order_computation_by_hand(llama):
    chosen, rejected = token_pair()
    eap = C.edge_attribution(llama, [(chosen, rejected)], "eap", progress=False)
    edges = eap.edges
    expected = torch.tensor(first_order_by_hand(llama, chosen, rejected, edges))
    assert eap.values.shape == (1, len(edges))
    torch.testing.assert_close(eap.values[0], expected, atol=1e-5, rtol=1e-4)
    assert expected.abs().max() > 1e-2  # the check has something to check
    assert float(eap.margin[0]) == pytest.approx(plain_reward(llama, chosen) - plain_reward(llama, rejected), abs=1e-5)


def test_eap_ig_with_one_step_is_eap_and_differs_with_more(llama):
    pair = token_pair()
    eap = C.edge_attribution(llama, [pair], "eap", progress=False)
    ig1 = C.edge_attribution(llama, [pair], "eap-ig", steps=1, progress=False)
    ig4 = C.edge_attribution(llama, [pair], "eap-ig", steps=4, progress=False)
    torch.testing.assert_close(ig1.values, eap.values, atol=1e-6, rtol=1e-5)
    assert (ig4.values - eap.values).abs().max() > 1e-4
    assert (ig1.steps, ig4.steps, ig4.method) == (1, 4, "eap-ig")


def test_eap_ig_is_complete_over_the_embeddings_edges(llama):
    """Integrated gradients along the embedding path: the embedding's edges (every path starts with one) sum to
    r(rejected) − r(chosen) as steps grow (right Riemann sum), which one gradient (EAP) does not give."""
    pair = token_pair()
    graph = C.circuit_graph(llama)
    embed_edges = [i for i, e in enumerate(graph.edges) if e.sender.kind == "embed"]
    ig = C.edge_attribution(llama, [pair], "eap-ig", steps=64, progress=False)
    total = float(ig.values[0, embed_edges].sum())
    assert total == pytest.approx(-float(ig.margin[0]), rel=0.03, abs=1e-3)
    eap = C.edge_attribution(llama, [pair], "eap", progress=False)
    assert abs(float(eap.values[0, embed_edges].sum()) + float(eap.margin[0])) > 0.03 * abs(float(eap.margin[0]))


def test_cost_is_the_counted_passes(llama):
    """`forward_equivalents` equals the rows that run through the embedding (forward passes) plus two per row
    that is differentiated (backward passes), less the one graph check per call."""
    rows: list[int] = []
    handle = llama.embed.register_forward_hook(lambda module, args, out: rows.append(out.shape[0]))
    try:
        pair = token_pair()
        for method, steps, backward_rows in (("eap", 1, 1), ("eap-ig", 4, 4)):
            rows.clear()
            C.edge_attribution(llama, [pair], method, steps=steps, progress=False)
            assert sum(rows) - 1 + 2 * backward_rows == C.forward_equivalents(method, steps=steps)
        rows.clear()
        C.exact_edge_effects(llama, [pair], C.circuit_graph(llama).edges[:7], progress=False)
        assert sum(rows) - 1 == C.forward_equivalents("patch", n_sets=7)
    finally:
        handle.remove()


def test_faithfulness_ends_and_curve_summaries(llama):
    pairs = [token_pair(seed=s) for s in range(3)]
    graph = C.circuit_graph(llama)
    full = C.circuit_faithfulness(llama, pairs, graph.edges, progress=False)
    empty = C.circuit_faithfulness(llama, pairs, [], progress=False)
    assert full.fraction == pytest.approx(1.0, abs=1e-5)
    assert empty.fraction == pytest.approx(0.0, abs=1e-5)
    torch.testing.assert_close(full.values, full.margin, atol=1e-5, rtol=0)
    scores = C.edge_attribution(llama, pairs, "eap", progress=False)
    curve = C.faithfulness_curve(llama, pairs, scores, sizes=[0, 5, 20, graph.n_edges], progress=False)
    assert curve.sizes == [0, 5, 20, graph.n_edges]
    assert float(curve.values[0]) == pytest.approx(0.0, abs=1e-5)
    assert float(curve.values[-1]) == pytest.approx(1.0, abs=1e-5)
    # the top-5 circuit's point equals circuit_faithfulness of the same 5 edges
    top5 = C.circuit_faithfulness(llama, pairs, scores.top(5), progress=False)
    assert float(curve.values[1]) == pytest.approx(top5.fraction, abs=1e-6)
    assert curve.at(5)[0] == float(curve.values[1]) and curve.at(5)[1] == (
        float(curve.ci_low[1]),
        float(curve.ci_high[1]),
    )
    # the same curve from the ranked edges themselves, and rebuilt from its per-pair numbers
    ranked = C.faithfulness_curve(llama, pairs, scores.top(20), sizes=[0, 5, 20], progress=False)
    torch.testing.assert_close(ranked.values, curve.values[:3])
    rebuilt = C.FaithfulnessCurve.from_kept(curve.kept, curve.margin, curve.sizes, graph.n_edges, method="eap")
    torch.testing.assert_close(rebuilt.values, curve.values)
    assert (rebuilt.cpr, rebuilt.cmd) == (curve.cpr, curve.cmd)
    # CPR and CMD by the trapezoid rule, by hand
    x = [k / graph.n_edges for k in curve.sizes]
    f = curve.values.tolist()
    cpr = sum((x[i + 1] - x[i]) * (f[i] + f[i + 1]) / 2 for i in range(len(x) - 1))
    cmd = sum((x[i + 1] - x[i]) * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2 for i in range(len(x) - 1))
    assert curve.cpr == pytest.approx(cpr) and curve.cmd == pytest.approx(cmd)
    assert curve.ci_low.shape == curve.values.shape and bool((curve.ci_low <= curve.ci_high + 1e-12).all())
    assert C.default_sizes(1000)[:3] == [0, 1, 2] and C.default_sizes(1000)[-1] == 1000


def test_bad_inputs_are_refused(llama, tmp_path):
    pair = token_pair()
    with pytest.raises(InputError, match="method"):
        C.edge_attribution(llama, [pair], "ig")
    with pytest.raises(InputError, match="steps"):
        C.edge_attribution(llama, [pair], "eap-ig", steps=0)
    with pytest.raises(InputError, match="different lengths"):
        C.edge_attribution(llama, [(pair[0], pair[1][:-1])], progress=False)
    with pytest.raises(InputError, match="No pairs"):
        C.circuit_faithfulness(llama, [], [])
    with pytest.raises(InputError, match="Unknown edge"):
        C.patch_edges(llama, pair, ["L0H2->L7MLP"])
    with pytest.raises(InputError, match="noise"):
        C.patch_edges(llama, pair, [], mode="denoise")
    with pytest.raises(TypeError, match="unexpected keyword"):
        C.patch_edges(llama, pair, [], alignment="reward")
    # the options as one PatchSpec run the same experiment as keywords
    spec = PatchSpec(mode="noise", align="reward", progress=False)
    by_spec = C.edge_attribution(llama, [pair], spec=spec)
    torch.testing.assert_close(by_spec.values, C.edge_attribution(llama, [pair], align="reward", progress=False).values)
    gemma = load_tiny(build_hf_model("gemma2"), tmp_path / "gemma2")
    with pytest.raises(UnsupportedArchitectureError, match="not a sum of head and MLP outputs"):
        C.patch_edges(gemma, token_pair(), [])
    assert not gemma.cfg.use_split_qkv_input  # restored after the refusal


# ---------------------------------------------------------------------------------------------------- organisms
@pytest.fixture(scope="module")
def sycophancy():
    pairs = [p for p in organisms.load_pairs("sycophancy") if p["mechanism"] == "sycophancy"][:16]
    return organisms.load("sycophancy"), pairs


def test_sycophancy_circuit_is_found_by_eap_ig_and_eap_ig_agrees_with_exact_patching(sycophancy):
    model, pairs = sycophancy
    kw = dict(render=organisms.render, progress=False)
    ig = C.edge_attribution(model, pairs, "eap-ig", steps=5, **kw)
    eap = C.edge_attribution(model, pairs, "eap", **kw)
    ranked = ig.top(ig.values.shape[1])
    k = ranked.index("L0H2->reward") + 1
    assert k <= 10  # the planted head's direct edge is among EAP-IG's top 10 edges
    circuit = ranked[:k]
    kept = C.circuit_faithfulness(model, pairs, circuit, **kw)
    assert kept.fraction >= 0.8, (k, kept.fraction)
    assert kept.ci[0] <= kept.fraction <= kept.ci[1]
    exact = C.exact_edge_effects(model, pairs, **kw)
    rho_ig, rho_eap = C.edge_agreement(ig, exact).rho, C.edge_agreement(eap, exact).rho
    print(f"circuit of {k} edges keeps {kept.fraction:.3f}; Spearman vs exact: EAP-IG {rho_ig:.3f}, EAP {rho_eap:.3f}")
    assert rho_ig >= rho_eap > 0.5


def test_armorm_organism_through_the_gated_head():
    model = organisms.load("armorm")
    pairs = organisms.load_pairs("armorm")
    pair = pairs[0]
    texts = [organisms.render(pair["prompt"], pair[k]) for k in ("chosen", "rejected")]
    graph = C.circuit_graph(model)
    kw = dict(render=organisms.render)
    with torch.no_grad():
        r_chosen, r_rejected = (float(model([t])[0]) for t in texts)
    assert C.patch_edges(model, pair, [], **kw) == pytest.approx(r_chosen, abs=1e-5)
    assert C.patch_edges(model, pair, graph.edges, **kw) == pytest.approx(r_rejected, abs=1e-5)
    eap = C.edge_attribution(model, [pair], "eap", progress=False, **kw)
    assert float(eap.margin[0]) == pytest.approx(r_chosen - r_rejected, abs=1e-5)
    # EAP through the gate equals the first-order computation by hand (edges into the reward)
    chosen, rejected = (model.prepare([t])[0][0] for t in texts)
    edges = [e for e in graph.edges if e.receiver is None][:4]
    expected = first_order_by_hand(model, chosen, rejected, edges)
    got = eap.values[0, [eap.index_of("edge", e) for e in edges]]
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-4, rtol=1e-3)
    full = C.circuit_faithfulness(model, [pair], graph.edges, progress=False, **kw)
    assert full.fraction == pytest.approx(1.0, abs=1e-5)


def test_results_serialise_and_read(llama):
    pairs = [token_pair(seed=s) for s in range(3)]
    eap = C.edge_attribution(llama, pairs, "eap", progress=False)
    data = eap.to_json()
    assert data["type"] == "EdgeAttribution" and data["method"] == "eap" and len(data["labels"]["edge"]) == 82
    frame = eap.to_frame()
    assert list(frame["edge"][:3]) == [str(e) for e in eap.top(3)]
    exact = C.exact_edge_effects(llama, pairs, eap.top(10), progress=False)
    agreement = C.edge_agreement(eap, exact)
    assert agreement.values.shape == (2, 10) and np.isfinite(agreement.rho)
    assert agreement.ci[0] <= agreement.rho <= agreement.ci[1]
