"""The combination matrix: architecture x head x output (by index, by name) x padding side x attention path
(fused SDPA, explicit) x each patching entry point (the fast and the plain residual sweep) and each attribution
entry point. In every cell each entry point runs and agrees with a plain-torch reference written here (a
`run_with_hooks` forward or backward per patched site, HF's own forward, the same rows one at a time) or with the
other path of the same cell.

The full grid (`CELLS`: 6 architectures x {linear, multi-output, value head} x 2 outputs x 2 sides x 2 attention
paths, and ArmoRM on its Llama backbone) is marked slow; the default run takes `FAST_CELLS`, a covering subset
in which every value of every axis appears (each architecture, each head, both outputs, both sides, both paths).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
from conftest import ARCH_CONFIGS, ARCHS, VOCAB, build_hf_model, hf_reference_rewards, save_checkpoint

from hooked_reward import HookedRewardModel
from hooked_reward.analysis.attribution import (
    attribution_from_cache,
    direct_reward_attribution,
    pair_reward_attribution,
    required_hooks,
)
from hooked_reward.analysis.attribution_patching import attribution_patch
from hooked_reward.analysis.patching import Patch, patch_block_outputs, patch_heads, patch_hooks, patch_resid
from hooked_reward.analysis.path_patching import path_patch
from hooked_reward.analysis.ranked_patching import ranked_patching
from hooked_reward.outputs import select_output
from hooked_reward.positions import pad_rows

HEADS = ("linear", "multi", "value", "armorm")
TOL = 1e-4
# Token rows (2 is BOS) holding ArmoRM's gating pattern 3 60 61 (see test_armorm.py), so that every head reads
# the same inputs. Equal-length clean/corrupt rows differ at positions 1 and 5.
CLEAN = torch.tensor([2, 10, 11, 3, 60, 61, 13, 14])
CORRUPT = torch.tensor([2, 20, 11, 3, 60, 61, 23, 14])
ROWS = [[2, 10, 11, 3, 60, 61, 20, 21, 22], [2, 12, 3, 60, 61, 30, 31], [2, 16, 3, 60, 61, 50]]


def batch(left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`ROWS` padded (pad id 0) on the left or the right, with their mask."""
    return pad_rows(ROWS, 0, left=left)


@dataclass(frozen=True)
class Cell:
    arch: str
    head: str
    by_name: bool  # the output chosen by its name, else by its index
    left: bool  # padding side of the attribution batch
    fused: bool  # fused (SDPA) attention where the architecture allows it, else the explicit path

    def __str__(self) -> str:
        side, path = ("left" if self.left else "right"), ("fused" if self.fused else "explicit")
        return f"{self.arch}-{self.head}-{'name' if self.by_name else 'index'}-{side}-{path}"


CELLS = [
    Cell(arch, head, by_name, left, fused)
    for arch, head in [(a, h) for a in ARCHS for h in ("linear", "multi", "value")] + [("llama", "armorm")]
    for by_name, left, fused in itertools.product((False, True), repeat=3)
]
# Every architecture once, every head on several architectures, each of the other axes both ways.
FAST_CELLS = [
    Cell("llama", "linear", False, True, True),
    Cell("mistral", "multi", True, False, True),
    Cell("gemma2", "value", False, False, False),
    Cell("qwen2", "multi", False, True, False),
    Cell("qwen3", "linear", True, True, False),
    Cell("gpt2", "value", True, False, True),
    Cell("llama", "armorm", True, True, True),
]
GRID = [pytest.param(c, id=str(c)) for c in FAST_CELLS] + [
    pytest.param(c, id=str(c), marks=pytest.mark.slow) for c in CELLS if c not in FAST_CELLS
]


# ------------------------------------------------------------------------------------------------ the models
def causal_lm(arch: str) -> transformers.PreTrainedModel:
    """The tiny `arch` backbone as a CausalLM (for a TRL-style value head next to it), weights re-drawn."""
    cfg_name, _, kwargs = ARCH_CONFIGS[arch]
    config = getattr(transformers, cfg_name)(vocab_size=VOCAB, pad_token_id=0, **kwargs)
    torch.manual_seed(5)
    lm = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in lm.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.5 / p.shape[-1] ** 0.5)
    return lm


@dataclass
class Loaded:
    model: HookedRewardModel
    reference: object  # (tokens, mask) -> the rewards [batch(, n_outputs)] computed without hooked_reward


_MODELS: dict[tuple[str, str], Loaded] = {}


def load(arch: str, head: str, root: Path) -> Loaded:
    """The cell's model, loaded once per (arch, head) for this module, with its plain-torch reward reference."""
    key = (arch, head)
    if key in _MODELS:
        return _MODELS[key]
    if head in ("linear", "multi"):
        path = save_checkpoint(build_hf_model(arch, num_labels=3 if head == "multi" else 1), root / f"{arch}-{head}")
        model = HookedRewardModel.from_pretrained(path)

        def reference(tokens, mask, path=path):
            return hf_reference_rewards(path, tokens, mask)

    elif head == "value":
        lm = causal_lm(arch)
        torch.manual_seed(6)
        summary = torch.nn.Linear(lm.config.hidden_size, 1)
        model = HookedRewardModel.from_value_head(lm, summary)

        def reference(tokens, mask, lm=lm, summary=summary):  # TRL: last token's final hidden state, through v_head
            with torch.no_grad():
                rows = [
                    summary(lm(t[m.bool()][None], output_hidden_states=True).hidden_states[-1][0, -1])[0]
                    for t, m in zip(tokens, mask, strict=True)
                ]
            return torch.stack(rows)

    else:
        from test_armorm import reference as armorm_reference
        from test_armorm import tiny_state, write_armorm

        state, config = tiny_state()
        model = HookedRewardModel.from_pretrained(write_armorm(root / "armorm", state, config))

        def reference(tokens, mask, state=state, config=config):
            rows = [t[m.bool()].tolist() for t, m in zip(tokens, mask, strict=True)]
            return armorm_reference(state, config, rows)["score"]

    _MODELS[key] = Loaded(model, reference)
    return _MODELS[key]


@pytest.fixture
def cell_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """`(cell, model, reference)` with the cell's attention path set (restored afterwards)."""
    cell: Cell = request.param
    loaded = load(cell.arch, cell.head, tmp_path_factory.getbasetemp())
    loaded.model.set_fused_attention(cell.fused)
    yield cell, loaded.model, loaded.reference
    loaded.model.set_fused_attention(True)


def output_arg(cell: Cell, names: list[str], name: str) -> tuple[int | str, int]:
    """What the cell passes as `output` (`name` or its index among `names`), and that index."""
    index = names.index(name)
    return (name if cell.by_name else index), index


def patch_output(cell: Cell, model: HookedRewardModel) -> tuple[int | str, int]:
    """The model output analysed: the last one (so index and name differ from a default of 0 where they can)."""
    return output_arg(cell, model.output_names, model.output_names[-1])


def reward(model: HookedRewardModel, row: torch.Tensor, index: int, hooks=()) -> float:
    """The model's reward for one row under `hooks`, output `index`: the reference patched run."""
    with torch.no_grad():
        return float(select_output(model.run_with_hooks(row[None], fwd_hooks=list(hooks)), index)[0])


def replace_with(cache: dict[str, torch.Tensor], name: str, where=(slice(None),)):
    """A hook writing `cache[name]` (the source run's activation) into the run at index `where` (after batch)."""

    def hook(act, hook=None):
        act = act.clone()
        act[(slice(None), *where)] = cache[name][(slice(None), *where)].to(act.dtype)
        return act

    return hook


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ---------------------------------------------------------------------------------------------- the rewards
@pytest.mark.parametrize("cell_model", GRID, indirect=True)
def test_rewards_equal_the_plain_reference(cell_model) -> None:
    cell, model, reference = cell_model
    tokens, mask = batch(cell.left)
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask)
    expect = reference(tokens, mask)
    assert ours.shape == expect.shape
    assert (ours - expect).abs().max() <= TOL


# ---------------------------------------------------------------------------------------------- patching
@pytest.mark.parametrize("cell_model", GRID, indirect=True)
def test_patching_entry_points(cell_model) -> None:
    """Denoising (the clean activation into the corrupted run) through every patching entry point, each
    against a `run_with_hooks` forward per site (or the other path of the cell)."""
    cell, model, _ = cell_model
    output, index = patch_output(cell, model)
    clean, corrupt = CLEAN, CORRUPT
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, len(clean)
    layers = range(n_layers)
    names = [f"blocks.{i}.hook_{h}" for i in layers for h in ("resid_pre", "attn_out", "mlp_out")]
    names += [f"blocks.{i}.attn.hook_z" for i in layers]
    _, cache = model.run_with_cache(clean[None], names_filter=names)
    r_clean, r_corrupt = reward(model, clean, index), reward(model, corrupt, index)

    # patch_resid: the fast and the plain sweep, and a forward per (layer, position)
    kw = dict(output=output, progress=False)
    fast = patch_resid(model, clean, corrupt, fast=True, **kw)
    plain = patch_resid(model, clean, corrupt, fast=False, **kw)
    assert not plain.meta["fast"]
    assert (fast.rewards - plain.rewards).abs().max() <= TOL
    for layer, p in itertools.product(range(n_layers), range(n_pos)):
        name = f"blocks.{layer}.hook_resid_pre"
        expect = reward(model, corrupt, index, [(name, replace_with(cache, name, (p,)))])
        assert float(plain.rewards[layer, p]) == pytest.approx(expect, abs=TOL)
    assert plain.r_clean == pytest.approx(r_clean, abs=TOL) and plain.r_corrupt == pytest.approx(r_corrupt, abs=TOL)

    # patch_block_outputs: every attention / MLP output, all positions at once
    blocks = patch_block_outputs(model, clean, corrupt, **kw)
    for i, comp in enumerate(blocks.labels["component"]):
        name = comp.hook_name
        expect = reward(model, corrupt, index, [(name, replace_with(cache, name))])
        assert float(blocks.rewards[i]) == pytest.approx(expect, abs=TOL), comp

    # patch_heads: each head's hook_z
    heads = patch_heads(model, clean, corrupt, act="z", **kw)
    assert heads.values.shape == (n_layers, n_heads)
    for layer, h in itertools.product(range(n_layers), range(n_heads)):
        name = f"blocks.{layer}.attn.hook_z"
        expect = reward(model, corrupt, index, [(name, replace_with(cache, name, (slice(None), h)))])
        assert float(heads.rewards[layer, h]) == pytest.approx(expect, abs=TOL)

    # patch_hooks: the whole last residual stream patched gives the clean reward
    last = f"blocks.{n_layers - 1}.hook_resid_post"
    whole = patch_hooks(model, clean, corrupt, {"all": Patch(last)}, **kw)
    assert float(whole.rewards[0]) == pytest.approx(r_clean, abs=TOL)

    # path_patch to the reward: a last-layer MLP reaches the reward only directly, so = patching its output
    mlp = ("mlp", n_layers - 1, None)
    path = path_patch(model, clean, corrupt, "reward", [mlp], **kw)
    mlp_i = [str(c) for c in blocks.labels["component"]].index(f"{n_layers - 1}_mlp_out")
    assert float(path.rewards[0]) == pytest.approx(float(blocks.rewards[mlp_i]), abs=TOL)

    # ranked_patching: its exact effects are patch_block_outputs' effects, its estimates attribution_patch's
    ranked = ranked_patching(model, clean, corrupt, by="component", top_k=2 * n_layers, output=output)
    assert torch.allclose(ranked.values, blocks.values, atol=TOL)
    approx = attribution_patch(model, clean, corrupt, output=output)
    assert torch.allclose(ranked.estimate, approx.sweep("block_outputs").values, atol=TOL)

    # attribution_patch at resid_pre: gradient of the corrupted run's reward there . (clean - corrupt), by hand
    grads = resid_pre_gradients(model, corrupt, index)
    _, corrupt_cache = model.run_with_cache(corrupt[None], names_filter=names)
    est = approx.sweep("resid_pre").values
    for layer in range(n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        delta = (cache[name][0] - corrupt_cache[name][0]).float()
        expect = (grads[layer].float() * delta).sum(-1)
        assert torch.allclose(est[layer].float(), expect, atol=TOL)


def resid_pre_gradients(model: HookedRewardModel, row: torch.Tensor, index: int) -> list[torch.Tensor]:
    """d reward / d blocks.{l}.hook_resid_pre `[pos, d_model]` for each layer: autograd from a leaf put there."""
    grads = []
    for layer in range(model.cfg.n_layers):
        leaf: list[torch.Tensor] = []

        def hook(act, hook=None, leaf=leaf):
            leaf.append(act.detach().requires_grad_(True))
            return leaf[0]

        out = select_output(
            model.run_with_hooks(row[None], fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", hook)]), index
        )
        grads.append(torch.autograd.grad(out[0], leaf[0])[0][0])
    return grads


# ---------------------------------------------------------------------------------------------- attribution
@pytest.mark.parametrize("cell_model", GRID, indirect=True)
def test_attribution_entry_points(cell_model) -> None:
    """Direct reward attribution of a padded batch: rows (+ bias) sum to the reference reward; the same as each
    row alone; from a cache the same; the pair attribution is the difference of the two sides'."""
    cell, model, reference = cell_model
    columns = model.head.readout_names()
    target = "score" if cell.head == "armorm" else model.output_names[-1]
    output, index = output_arg(cell, columns, target)
    model_index = model.output_names.index(target)
    tokens, mask = batch(cell.left)
    expect = reference(tokens, mask)
    expect = expect[:, model_index] if expect.ndim == 2 else expect
    for by in ("component", "head"):
        res = direct_reward_attribution(model, tokens, attention_mask=mask, by=by, output=output, progress=False)
        assert res.values.ndim == 2  # one output picked: [text, component]
        assert (res.values.sum(1) + res.bias - expect).abs().max() <= TOL
        for i in range(tokens.shape[0]):  # the same row alone, unpadded
            alone = tokens[i][mask[i].bool()][None]
            one = direct_reward_attribution(model, alone, by=by, output=output, progress=False)
            assert (one.values[0] - res.values[i]).abs().max() <= TOL
        hooks = required_hooks(model, by)
        _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=hooks)
        cached, labels = attribution_from_cache(cache, by=by, output=output)  # [row, batch(, output)]
        if cached.ndim == 3:  # the output axis: only the picked one, or all of them
            cached = cached[..., 0] if cached.shape[-1] == 1 else cached[..., index]
        assert [str(x) for x in labels] == [str(x) for x in res.labels["component"]]
        assert (cached.T - res.values).abs().max() <= TOL

    chosen, rejected = CLEAN[None], CORRUPT[None]
    pair = pair_reward_attribution(model, chosen, rejected, output=output, progress=False)
    r_c = select_output(model(chosen), model_index).detach()
    r_r = select_output(model(rejected), model_index).detach()
    total = pair.values.sum(1) + (pair.bias if pair.bias.ndim else 0.0)
    assert (total - (r_c - r_r)).abs().max() <= TOL
    if cell.head != "armorm":  # ArmoRM's score column adds a "gate" row: not a plain difference
        a = direct_reward_attribution(model, chosen, output=output, progress=False)
        b = direct_reward_attribution(model, rejected, output=output, progress=False)
        assert (pair.values - (a.values - b.values)).abs().max() <= TOL
