"""Rewards, margins and component ablations for an HF ``LlamaForSequenceClassification`` organism.

Used by training (to write the model card) and by the tests (to check the card). It works on the plain HF
model with PyTorch hooks, so it is independent of :class:`hooked_reward.HookedRewardModel`; the component
names follow TransformerLens hook names:

* ``blocks.{l}.attn.head.{h}`` -- head ``h``'s slice of ``blocks.{l}.attn.hook_z`` (the input of ``o_proj``);
* ``blocks.{l}.attn`` -- the whole attention output, ``blocks.{l}.hook_attn_out``;
* ``blocks.{l}.mlp`` -- the MLP output, ``blocks.{l}.hook_mlp_out``.

An ablation replaces the component's activation at every position by zero (``"zero"``) or by its mean over
all non-pad positions of a reference set of texts (``"mean"``), and we measure the mean reward margin
``r(chosen) - r(rejected)`` on each mechanism's pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from hooked_reward.names import act_name
from hooked_reward.organisms.data import render

if TYPE_CHECKING:
    from transformers import LlamaForSequenceClassification  # the organisms' architecture


def _block_part(layer: int, *parts: object) -> str:
    """The module path of a part of block `layer` (`blocks.1.attn`, `blocks.1.attn.head.2`): the ids the organism
    cards use for ablated components (module paths, not hook names; `hook_of` gives the hook)."""
    return ".".join(["blocks", str(layer), *map(str, parts)])


def component_names(n_layers: int, n_heads: int) -> list[str]:
    """Every ablatable component: each head, each attention layer, each MLP."""
    names = []
    for layer in range(n_layers):
        names += [_block_part(layer, "attn", "head", h) for h in range(n_heads)]
        names += [_block_part(layer, "attn"), _block_part(layer, "mlp")]
    return names


def hook_of(component: str) -> str:
    """The TransformerLens hook point that a component's ablation acts on."""
    parts = component.split(".")
    layer = int(parts[1])
    if ".attn.head." in component:
        return act_name("z", layer)
    if component.endswith(".attn"):
        return act_name("attn_out", layer)
    if component.endswith(".mlp"):
        return act_name("mlp_out", layer)
    raise ValueError(f"unknown component {component!r}")


def encode(tokenizer, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask)``; the tokenizer adds ``<bos>``/``<eos>``."""
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@torch.no_grad()
def rewards(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """The scalar reward of each text (HF's pooled logit at the last non-pad token)."""
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = encode(tokenizer, texts[i : i + batch_size])
        out.append(model(input_ids=ids, attention_mask=mask).logits[:, 0].float())
    return torch.cat(out)


def pair_margins(model: nn.Module, tokenizer, pairs: Sequence[dict]) -> torch.Tensor:
    """``r(chosen) - r(rejected)`` per pair, both rendered with :func:`render`."""
    chosen = [render(p["prompt"], p["chosen"]) for p in pairs]
    rejected = [render(p["prompt"], p["rejected"]) for p in pairs]
    r = rewards(model, tokenizer, chosen + rejected)
    return r[: len(pairs)] - r[len(pairs) :]


def margins_by_mechanism(model: nn.Module, tokenizer, pairs: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Per-pair margins grouped by the pair's ``"mechanism"`` label."""
    m = pair_margins(model, tokenizer, pairs)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(p["mechanism"], []).append(i)
    return {k: m[idx] for k, idx in groups.items()}


def _module_and_kind(model: LlamaForSequenceClassification, component: str) -> tuple[nn.Module, str, int | None]:
    parts = component.split(".")
    layer = model.model.layers[int(parts[1])]
    if ".attn.head." in component:
        return layer.self_attn.o_proj, "pre", int(parts[4])
    if component.endswith(".attn"):
        return layer.self_attn, "post", None
    return layer.mlp, "post", None


@torch.no_grad()
def component_means(
    model: LlamaForSequenceClassification, tokenizer, texts: Sequence[str], components: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Mean activation of each component over the non-pad positions of ``texts``."""
    ids, mask = encode(tokenizer, texts)
    keep = mask.bool()
    store: dict[str, torch.Tensor] = {}
    handles = []
    for comp in components:
        module, kind, head = _module_and_kind(model, comp)
        if kind == "pre":

            def pre(_mod, args, comp=comp, head=head):
                z = args[0]
                dh = z.shape[-1] // model.config.num_attention_heads
                store[comp] = z[..., head * dh : (head + 1) * dh][keep].mean(0)

            handles.append(module.register_forward_pre_hook(pre))
        else:

            def post(_mod, _args, output, comp=comp):
                out = output[0] if isinstance(output, tuple) else output
                store[comp] = out[keep].mean(0)

            handles.append(module.register_forward_hook(post))
    try:
        model(input_ids=ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    return store


@contextmanager
def ablated(
    model: LlamaForSequenceClassification, components: Sequence[str], means: dict[str, torch.Tensor] | None = None
) -> Iterator[None]:
    """Within the block, replace each component's output by ``means[comp]`` (or zero if ``means`` is None)."""
    handles = []
    for comp in components:
        module, kind, head = _module_and_kind(model, comp)
        value = None if means is None else means[comp]
        if kind == "pre":

            def pre(_mod, args, head=head, value=value):
                z = args[0].clone()
                dh = z.shape[-1] // model.config.num_attention_heads
                z[..., head * dh : (head + 1) * dh] = 0.0 if value is None else value
                return (z, *args[1:])

            handles.append(module.register_forward_pre_hook(pre))
        else:

            def post(_mod, _args, output, value=value):
                out = output[0] if isinstance(output, tuple) else output
                new = torch.zeros_like(out) if value is None else value.expand_as(out).clone()
                return (new, *output[1:]) if isinstance(output, tuple) else new

            handles.append(module.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def ablation_table(
    model: LlamaForSequenceClassification,
    tokenizer,
    pairs: Sequence[dict],
    mode: str = "mean",
    components: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """For each component: per mechanism, the ablated mean margin, its fraction of the clean margin, accuracy.

    Returns ``{component: {mechanism: {"margin", "fraction_of_clean", "accuracy"}}}`` plus the clean row
    under the key ``"none"``. ``fraction_of_clean`` = ablated mean margin / clean mean margin (1 = no effect,
    0 = the preference is gone, < 0 = reversed).
    """
    cfg = model.config
    comps = (
        list(components) if components is not None else component_names(cfg.num_hidden_layers, cfg.num_attention_heads)
    )
    means = None
    if mode == "mean":
        texts = [render(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
        means = component_means(model, tokenizer, texts, comps)
    elif mode != "zero":
        raise ValueError("mode must be 'mean' or 'zero'")
    clean = margins_by_mechanism(model, tokenizer, pairs)
    table = {
        "none": {
            k: {"margin": v.mean().item(), "fraction_of_clean": 1.0, "accuracy": (v > 0).float().mean().item()}
            for k, v in clean.items()
        }
    }
    for comp in comps:
        if progress:
            progress(comp)
        with ablated(model, [comp], means):
            abl = margins_by_mechanism(model, tokenizer, pairs)
        table[comp] = {
            k: {
                "margin": v.mean().item(),
                "fraction_of_clean": v.mean().item() / clean[k].mean().item(),
                "accuracy": (v > 0).float().mean().item(),
            }
            for k, v in abl.items()
        }
    return table
