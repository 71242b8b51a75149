"""CONTRIBUTING.md's "How to add ..." recipes, followed to the letter: a throwaway reward head (a `RewardHead`
subclass registered with `registry.register_loader`), a throwaway analysis (a function returning a
`LabeledTensor` subclass) and a throwaway command (one module holding `COMMAND` plus its registry line). Each is
checked against an independent computation: HF's own forward of the saved checkpoint."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from conftest import build_hf_model, chat_tokenizer

SCALE, SHIFT = 2.0, 1.0  # the throwaway head: a calibrated score, SCALE * score(h) + SHIFT


def _hf_scores(path: Path, model, texts: list[str]) -> torch.Tensor:
    """The checkpoint's own HF forward (its `score` logits), one text at a time, on the tokens the model reads."""
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.stack([hf(model.tokenize(t)[0]).logits[0, 0] for t in texts])


# ---------------------------------------------------------------------------------------------- a reward head
@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The head recipe: one `RewardHead` subclass (`forward`, `hook_points`, its readout through `linear_map`),
    its loader registered by the config's `architectures` entry; a checkpoint saved with that entry."""
    from torch import nn
    from transformer_lens.hook_points import HookPoint

    from hooked_reward import registry
    from hooked_reward.heads import RewardHead
    from hooked_reward.heads.base import HeadInputs  # the forward's second argument (annotation)
    from hooked_reward.hf_load import load_hf_model, load_tokenizer
    from hooked_reward.loading import from_sequence_classifier

    class CalibratedHead(RewardHead):
        """reward = SCALE * (W h + b) + SHIFT: an affine head, read off the residual as (SCALE W, SCALE b + SHIFT)."""

        def __init__(self, score: nn.Module) -> None:
            super().__init__()
            object.__setattr__(self, "_score", score)  # the bridge's unembed (HF `score`), not registered twice
            self.output_names = ["reward"]
            self.hook_calibrated = HookPoint()

        def _linear(self) -> nn.Linear:
            return getattr(self._score, "original_component", None) or self._score

        def hook_points(self) -> dict[str, HookPoint]:
            return {"hook_calibrated": self.hook_calibrated}

        def linear_map(self) -> tuple[torch.Tensor, torch.Tensor]:
            linear = self._linear()
            bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
            return SCALE * linear.weight, SCALE * bias + SHIFT

        def forward(self, reward_resid: torch.Tensor, inputs: HeadInputs) -> torch.Tensor:
            return self.squeeze_single(self.hook_calibrated(SCALE * self._score(reward_resid) + SHIFT))

    architecture = "ThrowawayCalibratedRewardModel"

    @registry.register_loader(architecture)
    def load(path: Path, **hf_kwargs):
        hf_model = load_hf_model(transformers.AutoModelForSequenceClassification, path, **hf_kwargs)
        loaded = from_sequence_classifier(hf_model, load_tokenizer(path))
        return dataclasses.replace(loaded, make_head=lambda bridge: CalibratedHead(bridge.unembed))

    path = tmp_path_factory.mktemp("recipes") / "calibrated"
    build_hf_model("llama", seed=3).save_pretrained(path)
    chat_tokenizer().save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    yield path
    registry.LAYOUTS.pop(architecture)


def test_head_recipe(calibrated):
    """The reward equals the original forward (HF's score, calibrated) and `decompose_reward` sums to it."""
    from hooked_reward import HookedRewardModel

    model = HookedRewardModel.from_pretrained(calibrated)
    assert type(model.head).__name__ == "CalibratedHead"
    texts = ["the cat is very good", "a dog was not bad please"]
    with torch.no_grad():
        rewards = torch.stack([model([t])[0] for t in texts])
        _, cache = model.run_with_cache(texts[0])
    torch.testing.assert_close(rewards, SCALE * _hf_scores(calibrated, model, texts) + SHIFT, rtol=1e-4, atol=1e-4)
    attrs, _ = cache.decompose_reward()  # [component, batch]: sums to reward - b_R_eff (= SHIFT: no biases here)
    torch.testing.assert_close(attrs.sum(0)[0] + SHIFT, rewards[0], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- an analysis
def test_analysis_recipe(calibrated):
    """An analysis in the recipe's shape: `(model, texts) -> LabeledTensor subclass`, inputs through the model,
    hook names from `names`, the reward read through the head's `readout`; its result has the contract's parts
    and its numbers equal HF's forward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hooked_reward import HookedRewardModel
    from hooked_reward.analysis.results import LabeledTensor
    from hooked_reward.final_norm import fold_final_norm
    from hooked_reward.names import act_name

    @dataclasses.dataclass(repr=False)
    class ReadoutReward(LabeledTensor):
        """The reward read off the final residual at the reward position through the head's readout `[text]`."""

    def readout_reward(model: HookedRewardModel, texts: list[str]) -> ReadoutReward:
        last = act_name("resid_post", model.cfg.n_layers - 1)
        with torch.no_grad():
            _, cache = model.run_with_cache(texts, names_filter=lambda name: name == last or "hook_scale" in name)
        normed = cache.apply_final_ln_at_reward(cache[last])  # [text, d_model], the norm's gain folded below
        values = fold_final_norm(model, model.head.readout(cache)).apply(normed)[..., 0]
        return ReadoutReward(values.detach(), ("text",), {"text": list(texts)}, "reward", {"hook": last})

    model = HookedRewardModel.from_pretrained(calibrated)
    texts = ["the cat is very good", "a dog was not bad please"]
    result = readout_reward(model, texts)
    torch.testing.assert_close(
        result.values, SCALE * _hf_scores(calibrated, model, texts) + SHIFT, atol=1e-4, rtol=1e-4
    )
    assert list(result.to_frame()["reward"].round(6)) == [round(float(v), 6) for v in result.values]
    fig, ax = plt.subplots()
    assert result.plot(ax=ax) is ax
    plt.close(fig)
    json.dumps(result.to_json(), allow_nan=False)


# ---------------------------------------------------------------------------------------------- a command
COMMAND_MODULE = '''
"""`hooked-reward margins`: each pair's margin r(chosen) - r(rejected), one unit per pair."""

from hooked_reward.errors import InputError
from hooked_reward.report.html import Report
from hooked_reward.study.command import Command
from hooked_reward.study.runner import Unit
from hooked_reward.study.units import pair_input


class Margins(Command):
    name = "margins"
    help = "each pair's reward margin"
    default_out = "hooked_reward_margins"

    def add_arguments(self, parser):
        parser.add_argument("--scale", type=float, default=1.0, help="multiply the margins by this")

    def check_arguments(self, args):
        if args.scale <= 0:
            raise InputError(f"--scale must be > 0, got {args.scale}; pass a positive factor.")

    def settings(self, inputs):
        return {"scale": inputs.args.scale}

    def units(self, inputs):
        return [Unit(f"pair/{i}", pair_input(p), {"pair": i}) for i, p in enumerate(inputs.pairs)]

    def compute_unit(self, inputs, unit):
        r = inputs.model([unit.input["chosen"], unit.input["rejected"]]).detach()
        return {"texts": [unit.input["chosen"], unit.input["rejected"]], "margin": float(r[0] - r[1])}

    def summarise(self, inputs, rows):
        return [{**row, "margin": row["margin"] * inputs.args.scale} for row in rows]

    def write_report(self, result, inputs, out_dir, provenance):
        with Report(out_dir, "Margins", command=self.name, provenance=provenance) as report:
            report.add_table("Margins", [{"pair": i, "margin": r["margin"]} for i, r in enumerate(result)])
            report.add_data("pairs", result)
            return report.write()


COMMAND = Margins()
'''


def test_command_recipe(calibrated, tmp_path, monkeypatch, capsys):
    """One module plus its registry line: the CLI lists it, checks its arguments before loading anything, runs
    one stored unit per pair, and writes margins equal to HF's forward."""
    from hooked_reward import HookedRewardModel
    from hooked_reward.cli import build_parser, main
    from hooked_reward.study import registry
    from hooked_reward.study.store import read_records, store_root

    (tmp_path / "throwaway_margins.py").write_text(textwrap.dedent(COMMAND_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.COMMANDS, "margins", "throwaway_margins")
    assert "margins" in build_parser().format_help()

    out = tmp_path / "margins"
    assert main(["margins", "--model", str(calibrated), "--out", str(out), "--scale", "0", "--quiet"]) == 2
    assert "--scale must be > 0" in capsys.readouterr().err and not out.exists()

    pairs = tmp_path / "pairs.jsonl"
    records = [
        {"prompt": "is the cat good", "chosen": "yes the cat is very good", "rejected": "no"},
        {"prompt": "is the dog bad", "chosen": "no the dog is good", "rejected": "yes very bad"},
    ]
    pairs.write_text("\n".join(json.dumps(r) for r in records))
    argv = ["margins", "--model", str(calibrated), "--pairs", str(pairs), "--out", str(out), "--scale", "3"]
    assert main([*argv, "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["results"]["pairs"]
    model = HookedRewardModel.from_pretrained(calibrated)
    for row in rows:
        hf = SCALE * _hf_scores(calibrated, model, row["texts"]) + SHIFT
        assert row["margin"] == pytest.approx(3 * float(hf[0] - hf[1]), abs=1e-4)
    stored = [r for f in store_root(out).rglob("*.jsonl") for r in read_records(f)]
    assert {r["unit"]["id"] for r in stored} == {"pair/0", "pair/1"}
    sys.modules.pop("throwaway_margins", None)
