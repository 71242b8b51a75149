"""The report of `hooked-reward circuit`: the circuit of the reward margin found by edge attribution (EAP-IG or
EAP), drawn as a graph, with both methods' faithfulness curves and their agreement with exact edge patching."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hooked_reward.names import Edge, node_label
from hooked_reward.report.html import Report

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from hooked_reward.analysis.circuits import EdgeAgreement, EdgeAttribution, FaithfulnessCurve

__all__ = ["draw_circuit", "write_circuit_report"]

METHOD_NAMES = {"eap": "EAP", "eap-ig": "EAP-IG", "exact": "exact edge patching (edges checked)"}


def _node_position(label: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    """Nodes by layer: the embedding on the left, each layer's heads then its MLP, the reward on the right; heads
    spread vertically by index."""
    if label == "embed":
        return 0.0, 0.0
    if label == "reward":
        return 2.0 * n_layers + 1, 0.0
    layer = int(label[1:].split("H")[0].split("M")[0])
    if label.endswith("MLP"):
        return 2.0 * layer + 2, 0.0
    head = int(label.split("H")[1])
    return 2.0 * layer + 1, head - (n_heads - 1) / 2


def draw_circuit(ax: Axes, edges: Sequence[Edge], scores: Sequence[float], n_layers: int, n_heads: int) -> None:
    """The circuit's edges as a directed graph (networkx) on `ax`: nodes by layer (embedding, each layer's heads and
    MLP, reward), one arrow per sender → receiver with its inputs (q, k, v) written on it, width by |score| (the
    sum over the pair's inputs), red where patching the edge lowers the margin (it carries the preference), blue
    where it raises it."""
    import networkx as nx

    graph = nx.DiGraph()
    weight: dict[tuple[str, str], float] = defaultdict(float)
    signed: dict[tuple[str, str], float] = defaultdict(float)
    inputs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for edge, score in zip(edges, scores, strict=True):
        key = (node_label(edge.sender), node_label(edge.receiver))
        weight[key] += abs(float(score))
        signed[key] += float(score)
        if edge.input:
            inputs[key].append(edge.input)
    nodes = {"embed", "reward"} | {n for key in weight for n in key}
    for node in nodes:
        graph.add_node(node, pos=_node_position(node, n_layers, n_heads))
    for key, w in weight.items():
        graph.add_edge(*key, weight=w, sign=signed[key], label=",".join(sorted(inputs[key])))
    pos = nx.get_node_attributes(graph, "pos")
    largest = max(weight.values(), default=1.0) or 1.0
    colours = ["tab:red" if graph.edges[e]["sign"] < 0 else "tab:blue" for e in graph.edges]
    widths = [0.8 + 5.0 * graph.edges[e]["weight"] / largest for e in graph.edges]
    node_colours = [
        "#dddddd" if n in ("embed", "reward") else ("#c6dbef" if n.endswith("MLP") else "#fdd0a2") for n in graph.nodes
    ]
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=node_colours, node_size=900, edgecolors="k", linewidths=0.6)
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=7)
    nx.draw_networkx_edges(
        graph,
        pos,
        ax=ax,
        edge_color=colours,
        width=widths,
        arrowsize=12,
        node_size=900,
        connectionstyle="arc3,rad=0.12",
        alpha=0.8,
    )
    labels = {e: graph.edges[e]["label"] for e in graph.edges if graph.edges[e]["label"]}
    nx.draw_networkx_edge_labels(graph, pos, edge_labels=labels, ax=ax, font_size=6, connectionstyle="arc3,rad=0.12")
    ax.set_axis_off()
    ax.margins(0.08)


def _mean(result: EdgeAttribution, edges: Sequence[str]) -> list[float]:
    mean = result.mean()
    return [float(mean[result.index_of("edge", e)]) for e in edges]


def write_circuit_report(
    scores: Mapping[str, EdgeAttribution],
    exact: EdgeAttribution,
    curves: Mapping[str, FaithfulnessCurve],
    agreements: Mapping[str, EdgeAgreement],
    out_dir: str | Path,
    *,
    method: str,
    top_k: int,
    n_layers: int,
    n_heads: int,
    cost: Mapping[str, int] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write `index.html`, PNGs and `report.json` of a circuit study: `scores` (`{"eap": ..., "eap-ig": ...}`, every
    edge, per pair), `exact` (exact edge patching of the edges checked), `curves` and `agreements` per method;
    `method` is the one whose top-`top_k` circuit is drawn. `cost`: forward-equivalents per pair, by method.
    Returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    main = scores[method]
    circuit = main.top(top_k)
    faith, (lo, hi) = curves[method].at(len(circuit))
    n_pairs, n_edges = int(main.values.shape[0]), int(main.values.shape[1])
    margin = float(main.margin.mean())
    name = METHOD_NAMES[method]
    other = next(m for m in scores if m != method)
    carriers = [str(e) for e, s in zip(circuit, _mean(main, circuit), strict=True) if s < 0][:3]
    summary = [
        f"Over {n_pairs} preference pairs (mean margin r(chosen) − r(rejected) = {margin:.3f}), {name} ranks the "
        f"{n_edges} edges of the model's graph by how much patching each one from the rejected text into the chosen "
        f"text would change the margin. Its top {len(circuit)} edges ({100 * len(circuit) / n_edges:.1f}% of the "
        f"graph), with every other edge patched, keep {100 * faith:.0f}% of the margin (95% interval "
        f"{100 * lo:.0f}% to {100 * hi:.0f}%).",
        "The edges that carry the preference most (patching them lowers the margin the most): "
        + (", ".join(carriers) if carriers else "none with a negative score")
        + ".",
        f"Against exact patching of the {len(exact.edges)} edges ranked highest by either method, {name} agrees "
        f"with Spearman ρ = {agreements[method].rho:.2f} [{agreements[method].ci[0]:.2f}, "
        f"{agreements[method].ci[1]:.2f}] and {METHOD_NAMES[other]} with ρ = {agreements[other].rho:.2f} "
        f"[{agreements[other].ci[0]:.2f}, {agreements[other].ci[1]:.2f}]; area under the faithfulness curve (CPR, "
        f"higher is better): {name} {curves[method].cpr:.3f}, {METHOD_NAMES[other]} {curves[other].cpr:.3f}.",
    ]
    intro = (
        "The reward margin's circuit: nodes are the embedding, every attention head (its query, key and value "
        "inputs separately), every MLP and the reward; an edge is one node's output read by a later node's input. "
        "Scores are first-order estimates (EAP: one gradient at the chosen run; EAP-IG: the gradient integrated "
        "along the path between the two runs' embeddings) of the change of the margin when the edge alone is "
        "patched from the rejected run; exact edge patching checks them."
    )
    with Report(out_dir, "Circuit of the reward margin", command="circuit", provenance=provenance, intro=intro) as rep:
        rep.add_text("Summary", summary)

        fig, ax = plt.subplots(figsize=(2.2 + 1.6 * (2 * n_layers + 2), 1.6 + 0.9 * n_heads))
        draw_circuit(ax, circuit, _mean(main, circuit), n_layers, n_heads)
        ax.set_title(f"Top {len(circuit)} edges by {name} (mean over pairs)", fontsize=9)
        rep.add_figure(
            "The circuit",
            fig,
            "circuit",
            "Nodes by layer, left to right; arrow width by |score| (summed over a head's q, k, v inputs, written on "
            "the arrow); red: patching the edge lowers the margin, blue: it raises it.",
        )
        plt.close(fig)

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
        for ax, m in zip(axes, ("eap-ig", "eap"), strict=True):
            curves[m].plot(ax=ax)
            ax.axvline(len(circuit) / n_edges, color="k", lw=0.6, ls=":")
            ax.set_title(f"{METHOD_NAMES[m]}: CPR {curves[m].cpr:.2f}, CMD {curves[m].cmd:.2f}", fontsize=9)
        fig.tight_layout()
        rep.add_figure(
            "Faithfulness curves",
            fig,
            "faithfulness_curves",
            "The fraction of the margin kept by each method's top-k edges with every other edge patched, against "
            "the fraction of edges kept (band: 95% bootstrap interval over pairs; dotted: the circuit drawn). CPR: "
            "area under the curve (higher is better); CMD: area under |1 − faithfulness| (lower is better).",
        )
        plt.close(fig)
        rep.add_table(
            "Faithfulness summary",
            [
                {
                    "method": METHOD_NAMES[m],
                    "CPR": curves[m].cpr,
                    "CMD": curves[m].cmd,
                    f"kept by top {len(circuit)}": curves[m].at(len(circuit))[0],
                    "interval": "[{:.3f}, {:.3f}]".format(*curves[m].at(len(circuit))[1]),
                }
                for m in ("eap-ig", "eap")
            ],
            level=3,
        )

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, m in zip(axes, ("eap-ig", "eap"), strict=True):
            agreements[m].plot(ax=ax)
            ax.set_title(
                f"{METHOD_NAMES[m]}: ρ = {agreements[m].rho:.2f} "
                f"[{agreements[m].ci[0]:.2f}, {agreements[m].ci[1]:.2f}]",
                fontsize=9,
            )
        fig.tight_layout()
        rep.add_figure(
            "Agreement with exact edge patching",
            fig,
            "agreement",
            f"Each method's mean score against the exact change of the margin when the edge alone is patched, over "
            f"the {len(exact.edges)} edges ranked in the top {top_k} by either method; Spearman ρ with a 95% "
            "bootstrap interval over pairs.",
        )
        plt.close(fig)

        shown = [str(e) for e in exact.edges]
        order = np.argsort(-np.abs(np.asarray(_mean(exact, shown))), kind="stable")
        rep.add_table(
            "Edges checked",
            [
                {
                    "edge": shown[i],
                    "exact Δ margin": _mean(exact, [shown[i]])[0],
                    "EAP-IG": _mean(scores["eap-ig"], [shown[i]])[0],
                    "EAP": _mean(scores["eap"], [shown[i]])[0],
                    "in the circuit": "yes" if shown[i] in {str(e) for e in circuit} else "",
                }
                for i in order
            ],
            "Mean over pairs of the change of the margin when the edge alone is patched (negative: the edge carries "
            "the preference).",
        )
        if cost:
            rep.add_table(
                "Cost",
                [{"method": METHOD_NAMES.get(k, k), "forward-equivalents per pair": v} for k, v in cost.items()],
                "A backward pass counted as two forwards; exact patching runs one batched row per edge and pair.",
                level=3,
            )
        rep.add_data("circuit", [str(e) for e in circuit])
        rep.add_data("scores", {m: s.to_json() for m, s in scores.items()})
        rep.add_data("exact", exact.to_json())
        rep.add_data("curves", {m: c.to_json() for m, c in curves.items()})
        rep.add_data("agreements", {m: a.to_json() for m, a in agreements.items()})
        return rep.write()
