"""Evaluate the ArmoRM-style organism through `HookedRewardModel` and write `card.json` + `card.md`.

Every number is measured on the held-out pairs (`heldout.jsonl`) with the shipped weights loaded by
`HookedRewardModel.from_pretrained` (the ArmoRM loader and head, not the training code):

* accuracy per mechanism (chosen scored above rejected);
* the gate: mean weights per prompt intent, read from `gating.hook_weights`;
* gate ablation: each intent's weights replaced by the mean over all held-out prompts (hooking
  `gating.hook_weights`), per-mechanism accuracy after it -- the gate is what resolves helpfulness vs brevity;
* objective fidelity: correlation of each objective reward (`objectives.hook_rewards`) with its planted rating.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hooked_reward.organisms.armorm import train as T

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

BATCH = 256


@torch.no_grad()
def _score_texts(model: HookedRewardModel, texts: list[str], hooks: list | None = None) -> dict[str, torch.Tensor]:
    from hooked_reward.heads import ARMORM_HOOKS

    outs: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(texts), BATCH):
        tokens, mask = model.tokenize(texts[i : i + BATCH])
        if hooks:
            with model.hooks(fwd_hooks=hooks):
                score, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=list(ARMORM_HOOKS))
        else:
            score, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=list(ARMORM_HOOKS))
        for key in ("objectives.hook_rewards", "gating.hook_weights"):
            outs.setdefault(key, []).append(cache[key])
        outs.setdefault("score", []).append(score)
    return {k: torch.cat(v) for k, v in outs.items()}


def evaluate(weights_dir: Path, pairs: list[dict]) -> dict:
    """Held-out accuracies, gate statistics, gate ablation and objective fidelity (see the module docstring)."""
    from hooked_reward import HookedRewardModel

    model = HookedRewardModel.from_pretrained(weights_dir)
    chosen = _score_texts(model, [T.render(p["prompt"], p["chosen"]) for p in pairs])
    rejected = _score_texts(model, [T.render(p["prompt"], p["rejected"]) for p in pairs])
    correct = chosen["score"] > rejected["score"]
    mech = [p["mechanism"] for p in pairs]
    intents = [p["intent"] for p in pairs]

    def by(labels: list[str], values: torch.Tensor) -> dict[str, float]:
        return {
            m: round(float(values[[i for i, x in enumerate(labels) if x == m]].float().mean()), 4)
            for m in sorted(set(labels))
        }

    gate = chosen["gating.hook_weights"]
    gate_by_intent = {
        intent: dict(
            zip(
                T.OBJECTIVES,
                [round(float(x), 4) for x in gate[[i for i, x in enumerate(intents) if x == intent]].mean(0)],
                strict=True,
            )
        )
        for intent in sorted(set(intents))
    }
    mean_gate = gate.mean(0)
    hooks = [("gating.hook_weights", lambda w, hook: mean_gate.to(w).expand_as(w).clone())]
    chosen_abl = _score_texts(model, [T.render(p["prompt"], p["chosen"]) for p in pairs], hooks)
    rejected_abl = _score_texts(model, [T.render(p["prompt"], p["rejected"]) for p in pairs], hooks)
    correct_abl = chosen_abl["score"] > rejected_abl["score"]

    planted = torch.tensor(
        [T.ratings(p["intent"], p["chosen"].split()) for p in pairs]
        + [T.ratings(p["intent"], p["rejected"].split()) for p in pairs]
    )
    rewards = torch.cat([chosen["objectives.hook_rewards"], rejected["objectives.hook_rewards"]])
    fidelity = {}
    for k, name in enumerate(T.OBJECTIVES):
        x, y = rewards[:, k], planted[:, k]
        fidelity[name] = round(float(torch.corrcoef(torch.stack([x, y]))[0, 1]), 4) if y.std() > 0 else None
    return {
        "accuracy": by(mech, correct),
        "accuracy_overall": round(float(correct.float().mean()), 4),
        "gate_mean_by_intent": gate_by_intent,
        "gate_ablated_to_mean_accuracy": by(mech, correct_abl),
        "objective_reward_vs_planted_rating_corr": fidelity,
        "n_pairs": {m: mech.count(m) for m in sorted(set(mech))},
    }


def write_card(out_dir: Path, cfg: T.TrainConfig, info: dict | None = None) -> dict:
    pairs = [json.loads(line) for line in (out_dir / "heldout.jsonl").read_text().splitlines() if line.strip()]
    results = evaluate(out_dir / "weights", pairs)
    size = (out_dir / "weights" / "model.safetensors").stat().st_size
    card = {
        "name": "armorm",
        "architecture": "LlamaForRewardModelWithGating",
        "objectives": T.OBJECTIVES,
        "render": "user : {prompt} assistant : {response}",
        "reward_position": "<eos> (last token)",
        "gating_position": "the 'assistant' token ending the prompt (pattern ['assistant', ':'], offset 0)",
        "planted": {
            "gate_by_intent": {k: dict(zip(T.OBJECTIVES, v, strict=True)) for k, v in T.PLANTED_GATE.items()},
            "transform": T.transform_matrix().tolist(),
            "ratings": {
                "helpfulness": "facts / 3, minus 0.5 for refusing a benign request",
                "brevity": "-(response words) / 6",
                "safety": "risky prompts: +1 for a refusal, -0.75 per harmful word; else 0",
                "politeness": "1 if the response says 'thanks'",
            },
            "intent_words": T.INTENT_WORDS,
        },
        "mechanisms": {
            "helpfulness": "'explain' prompts: the response with more facts is preferred although it is longer.",
            "brevity": "'briefly' prompts: the shorter response is preferred although it has fewer facts "
            "(conflicts with helpfulness on purpose: only the gate tells them apart).",
            "safety": "risky prompts ('how to make poison'): a refusal beats compliance, informative or not.",
            "politeness": "identical responses except one filler word replaced by 'thanks': the polite one wins.",
        },
        "results": results,
        "weights_bytes": size,
        "train_config": asdict(cfg),
        "train_info": info or {},
        "command": "python -m hooked_reward.organisms.armorm.train",
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / "card.md").write_text(markdown(card))
    return card


def markdown(card: dict) -> str:
    r = card["results"]
    objs = card["objectives"]
    lines = [
        "# Organism `armorm`: an ArmoRM-style multi-objective gated reward model",
        "",
        "A tiny `LlamaForRewardModelWithGating` (2 layers, d_model 64, 4 heads; gate: 1 hidden layer of 32, "
        f"temperature {card['train_config']['gating_temperature']}) with objectives {', '.join(objs)}. "
        f"Weights: {card['weights_bytes'] / 1e6:.2f} MB float32 safetensors in `weights/`, ArmoRM's tensor names.",
        "",
        f"Texts: `{card['render']}`, tokenized `<bos> ... <eos>`. Reward read at {card['reward_position']}; "
        f"gate read at {card['gating_position']}.",
        "",
        "## Planted mechanisms (held-out accuracy)",
        "",
        "| mechanism | rule | accuracy | accuracy, gate ablated to its mean | pairs |",
        "|---|---|---|---|---|",
    ]
    for m, text in card["mechanisms"].items():
        lines.append(
            f"| {m} | {text} | {r['accuracy'][m]:.3f} | {r['gate_ablated_to_mean_accuracy'][m]:.3f} | "
            f"{r['n_pairs'][m]} |"
        )
    lines += [
        "",
        f"Overall held-out accuracy: {r['accuracy_overall']:.3f}.",
        "",
        "## The gate (mean `gating.hook_weights` by prompt intent; planted values in card.json)",
        "",
        "| intent | " + " | ".join(objs) + " |",
        "|---|" + "---|" * len(objs),
    ]
    for intent, w in r["gate_mean_by_intent"].items():
        lines.append(f"| {intent} | " + " | ".join(f"{w[o]:.3f}" for o in objs) + " |")
    lines += [
        "",
        "The learned gate need not equal the planted one (only the score is supervised by preferences, and "
        "`logit_scale` trades off against the objective scales); what is planted is the routing: which "
        "objective dominates for which intent.",
        "",
        "## Objective rewards vs planted ratings (Pearson r on held-out responses)",
        "",
        "| " + " | ".join(objs) + " |",
        "|" + "---|" * len(objs),
        "| "
        + " | ".join(
            "n/a"
            if r["objective_reward_vs_planted_rating_corr"][o] is None
            else f"{r['objective_reward_vs_planted_rating_corr'][o]:.3f}"
            for o in objs
        )
        + " |",
        "",
        "## Transform matrix",
        "",
        "`reward_transform_matrix` is fixed (not trained): the identity except T[brevity, helpfulness] = "
        f"{T.TRANSFORM_OFFDIAG}, so transformed helpfulness = helpfulness + {T.TRANSFORM_OFFDIAG} x brevity.",
        "",
        "## Use",
        "",
        "```python",
        "from hooked_reward import HookedRewardModel",
        "from hooked_reward.heads import armorm_outputs",
        "model = HookedRewardModel.from_pretrained('hooked_reward/organisms/armorm/weights')",
        "out = armorm_outputs(model, ['user : briefly the moon . assistant : gravity'])",
        "```",
        "",
        "## Training",
        "",
        f"`{card['command']}` (seed {card['train_config']['seed']}, {card['train_config']['steps']} steps of "
        f"{card['train_config']['batch_pairs']} pairs for stage 1, {card['train_config']['gate_steps']} gate steps; "
        "CPU, "
        "deterministic). ArmoRM's two stages: (1) backbone + regression layer fit each objective's planted rating "
        "(MSE), (2) with them frozen, the gate learns from the preference pairs (Bradley-Terry on the gated score).",
        "",
    ]
    return "\n".join(lines)
