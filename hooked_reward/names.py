"""Hook points and component labels: one vocabulary for every analysis.

Hook names are TransformerLens's, built with its `get_act_name` (`act_name("attn_out", 3)` ->
`blocks.3.hook_attn_out`), plus the reward model's own: `hook_reward_resid`, `hook_reward`, and the head's hooks
(`model.head.hook_points()`).

A component is what writes into the residual stream, or a finer part of it. `Component` is a `str` (its label,
so results print, compare and serialise as plain labels) that carries its structure: `kind`, `layer`, `index`
(head or neuron), and the hook that holds its output. The labels are TransformerLens's `decompose_resid` labels,
extended to heads and neurons:

    kind         label            hook_name                      index
    embed        "embed"          hook_embed                     -
    pos_embed    "pos_embed"      hook_pos_embed                 -
    attn_out     "3_attn_out"     blocks.3.hook_attn_out         -
    mlp_out      "3_mlp_out"      blocks.3.hook_mlp_out          -
    head         "L3H5"           blocks.3.attn.hook_z           head 5
    attn_bias    "3_attn_bias"    blocks.3.hook_attn_out         -      (attn_out minus its heads)
    neuron       "L3N7"           blocks.3.mlp.hook_post         neuron 7
    mlp_bias     "3_mlp_bias"     blocks.3.hook_mlp_out          -      (mlp_out minus its neurons)

A circuit graph (`hooked_reward.analysis.circuits`) labels its nodes "embed", `L3H5`, `L3MLP` and "reward"
(`node_label`) and its edges `L0H2->L1H0.q`, `embed->L0MLP`, `L1MLP->reward` (`Edge`).

Analyses build labels here (never by formatting strings themselves) and read structure from the attributes
(never by parsing labels back).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from transformer_lens.utilities import get_act_name

from hooked_reward.errors import InputError

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

FINAL_SCALE = "ln_final.hook_scale"
FINAL_NORM_IN = "ln_final.hook_in"
REWARD_RESID = "hook_reward_resid"
REWARD = "hook_reward"

KINDS = ("embed", "pos_embed", "attn_out", "mlp_out", "head", "attn_bias", "neuron", "mlp_bias")
_HOOK_OF_KIND = {
    "embed": "embed",
    "pos_embed": "pos_embed",
    "attn_out": "attn_out",
    "mlp_out": "mlp_out",
    "head": "z",
    "attn_bias": "attn_out",
    "neuron": "post",
    "mlp_bias": "mlp_out",
}


def act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """TransformerLens's hook name for an activation (`get_act_name`): `act_name("resid_pre", 0)` ->
    `blocks.0.hook_resid_pre`, `act_name("z", 2)` -> `blocks.2.attn.hook_z`, `act_name("scale", 1, "ln1")` ->
    `blocks.1.ln1.hook_scale`; `act_name("z", "*")` -> `blocks.*.attn.hook_z` (a label for every layer)."""
    return get_act_name(name, layer, layer_type)


def final_resid_hook(model: HookedRewardModel) -> str:
    """The last block's output, `blocks.{L-1}.hook_resid_post`: the residual `ln_final` reads."""
    return act_name("resid_post", model.cfg.n_layers - 1)


def resid_hooks(model: HookedRewardModel, layers: Sequence[int] | None = None, kind: str = "resid_post") -> list[str]:
    """`blocks.{l}.hook_{kind}` (resid_pre, resid_mid or resid_post) for `layers` (default: every layer)."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [act_name(kind, layer) for layer in layers]


def layer_of(hook_name: str) -> int:
    """The block index in a hook name (`blocks.3.attn.hook_z` -> 3); -1 for hooks outside the blocks."""
    parts = hook_name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return -1


class Component(str):
    """A component label (a `str`) with its structure: `kind` (one of `KINDS`), `layer` (None for embeddings)
    and `index` (the head or neuron; None otherwise). Build one with `Component(kind, layer, index)`."""

    kind: str
    layer: int | None
    index: int | None  # type: ignore[assignment]  # the head or neuron number: shadows str.index by design

    def __new__(cls, kind: str, layer: int | None = None, index: int | None = None) -> Component:
        if kind not in KINDS:
            raise InputError(f"Unknown component kind {kind!r}; use one of {KINDS}.")
        if kind in ("embed", "pos_embed"):
            if layer is not None or index is not None:
                raise InputError(f"{kind!r} has no layer or index.")
            label = kind
        elif layer is None or layer < 0:
            raise InputError(f"A {kind!r} component needs a layer >= 0, got {layer!r}.")
        elif kind in ("head", "neuron"):
            if index is None or index < 0:
                raise InputError(f"A {kind!r} component needs an index >= 0, got {index!r}.")
            label = f"L{layer}{'H' if kind == 'head' else 'N'}{index}"
        else:
            if index is not None:
                raise InputError(f"A {kind!r} component has no index.")
            label = f"{layer}_{kind}"
        obj = super().__new__(cls, label)
        obj.kind, obj.layer, obj.index = kind, layer, index
        return obj

    def __reduce__(self) -> tuple:
        return (Component, (self.kind, self.layer, self.index))

    def __repr__(self) -> str:
        return f"Component({str(self)!r})"

    @property
    def hook_name(self) -> str:
        """The hook that holds this component's output (a head's `hook_z`, a neuron's `mlp.hook_post`, a bias
        row's sublayer output)."""
        return act_name(_HOOK_OF_KIND[self.kind], self.layer)

    @property
    def head(self) -> int | None:
        """The head index of a head component, else None."""
        return self.index if self.kind == "head" else None


GRAPH_INPUTS = ("q", "k", "v")


def node_label(component: Component | None) -> str:
    """A circuit-graph node's label: "embed", a head's `L{l}H{h}`, an MLP's `L{l}MLP`, and "reward" for None (the
    reward readout)."""
    if component is None:
        return "reward"
    if component.kind in ("embed", "head"):
        return str(component)
    if component.kind == "mlp_out":
        return f"L{component.layer}MLP"
    raise InputError(f"A circuit-graph node is the embedding, a head, an MLP or the reward; got {component!r}.")


class Edge(str):
    """A circuit-graph edge label (a `str`, e.g. `L0H2->L1H0.q`, `embed->L0MLP`, `L1MLP->reward`) with its
    structure: `sender` (a `Component`: embed, head or mlp_out), `receiver` (a head or mlp_out `Component`, or None
    for the reward readout) and `input` ("q", "k" or "v" for a head receiver, None otherwise). Build one with
    `Edge(sender, receiver, input)`."""

    sender: Component
    receiver: Component | None
    input: str | None

    def __new__(cls, sender: Component, receiver: Component | None = None, input: str | None = None) -> Edge:
        if sender.kind not in ("embed", "head", "mlp_out"):
            raise InputError(f"An edge's sender is the embedding, a head or an MLP; got {sender!r}.")
        is_head = receiver is not None and receiver.kind == "head"
        if is_head != (input is not None) or (input is not None and input not in GRAPH_INPUTS):
            raise InputError(
                f"A head receiver needs input in {GRAPH_INPUTS} (other receivers none); got {receiver!r}, {input!r}."
            )
        label = f"{node_label(sender)}->{node_label(receiver)}" + (f".{input}" if input else "")
        obj = super().__new__(cls, label)
        obj.sender, obj.receiver, obj.input = sender, receiver, input
        return obj

    def __reduce__(self) -> tuple:
        return (Edge, (self.sender, self.receiver, self.input))

    def __repr__(self) -> str:
        return f"Edge({str(self)!r})"


def head_components(model: HookedRewardModel, layers: Sequence[int] | None = None) -> list[Component]:
    """`L{l}H{h}` for every head of `layers` (default: all), layer-major."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [Component("head", layer, h) for layer in layers for h in range(model.cfg.n_heads)]


def block_components(model: HookedRewardModel, layers: Sequence[int] | None = None) -> list[Component]:
    """`{l}_attn_out`, `{l}_mlp_out` for `layers` (default: all), in `decompose_resid`'s order."""
    layers = range(model.cfg.n_layers) if layers is None else layers
    return [Component(kind, layer) for layer in layers for kind in ("attn_out", "mlp_out")]


def resid_components(model: HookedRewardModel, pos_embed: bool) -> list[Component]:
    """The parts `cache.decompose_resid()` returns, in its order: embed, pos_embed (when the model has one),
    then each layer's attention and MLP output."""
    return [Component("embed")] + ([Component("pos_embed")] if pos_embed else []) + block_components(model)


def as_components(labels: Sequence[str], model: HookedRewardModel, pos_embed: bool) -> list[Component]:
    """TransformerLens's `decompose_resid` labels as `Component`s, checked against `resid_components` (so a
    change in TransformerLens's labels is an error, not a silent mislabel)."""
    components = resid_components(model, pos_embed)
    if [str(c) for c in components] != [str(label) for label in labels]:
        raise InputError(f"Unexpected decompose_resid labels {list(labels)[:6]}...; expected {components[:6]}...")
    return components
