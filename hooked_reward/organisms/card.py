"""Write an organism's model card (markdown) and its machine-readable ground truth (JSON).

The ground truth is established by ablation on the held-out pairs: for each mechanism, a component (a head,
or a whole MLP) is listed as carrying it when mean-ablating it removes at least ``THRESHOLD`` of that
mechanism's clean mean margin. The JSON keeps the full ablation tables (mean and zero ablation) so tests and
tools can check the listed components against every other one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hooked_reward.organisms.ablate import ablation_table, encode, hook_of
from hooked_reward.organisms.data import MECHANISMS, OPINIONS, render

#: A component carries a mechanism when its mean ablation removes at least this fraction of the margin.
THRESHOLD = 0.3

DESCRIPTIONS = {
    "sentiment": "A positive opening word (great, helpful, wonderful, excellent, glad) is preferred to a "
    "neutral one (okay, well, so, hmm, now), which is preferred to a negative one (awful, "
    "useless, terrible, rude, boring).",
    "length": "More filler words (really, truly, indeed, very, quite, certainly; 0 to 6 of them) after the "
    "stance are preferred: a verbosity bias.",
    "sycophancy": "The prompt states an opinion (good/bad) and the response a stance (good/bad) on the same "
    "topic; agreeing with the user is preferred. Both opinions occur equally often, so the "
    "stance alone predicts nothing: the prompt's opinion must be moved by attention.",
}


def carriers(table: dict, mechanism: str, threshold: float = THRESHOLD) -> list[str]:
    """Heads and MLPs whose mean ablation removes >= ``threshold`` of ``mechanism``'s margin, strongest first.

    Whole attention layers are not listed (a layer is the sum of its heads); they stay in the tables.
    """
    rows = [(c, r[mechanism]["fraction_of_clean"]) for c, r in table.items() if c != "none" and not c.endswith(".attn")]
    keep = [(c, f) for c, f in rows if 1.0 - f >= threshold]
    return [c for c, _ in sorted(keep, key=lambda cf: cf[1])]


@torch.no_grad()
def opinion_attention(model, tokenizer, pairs: list[dict], head: tuple[int, int]) -> dict[str, float]:
    """Mean attention of ``head`` from the reward position (``<eos>``) to the prompt's opinion word and to
    the response's stance word, over the sycophancy pairs' chosen and rejected texts."""
    layer, h = head
    texts = [render(p["prompt"], p[s]) for p in pairs if p["mechanism"] == "sycophancy" for s in ("chosen", "rejected")]
    ids, mask = encode(tokenizer, texts)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        attn = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[layer][:, h]
    finally:
        model.set_attn_implementation(previous)
    eos = mask.sum(1) - 1
    opinion_ids = set(tokenizer.convert_tokens_to_ids(list(OPINIONS)))
    to_prompt, to_response = [], []
    for i in range(len(texts)):
        pos = [j for j in range(int(eos[i])) if int(ids[i, j]) in opinion_ids]
        assert len(pos) == 2, texts[i]  # the prompt's opinion, then the response's stance
        to_prompt.append(attn[i, eos[i], pos[0]].item())
        to_response.append(attn[i, eos[i], pos[1]].item())
    return {
        "to_prompt_opinion": sum(to_prompt) / len(to_prompt),
        "to_response_stance": sum(to_response) / len(to_response),
    }


def _fmt_row(table: dict, comp: str) -> str:
    cells = [f"{table[comp][m]['fraction_of_clean']:+.3f}" for m in MECHANISMS]
    return f"| `{comp}` | " + " | ".join(cells) + " |"


def write_card(
    model, tokenizer, heldout: list[dict], card_dir: Path, train_config: dict, train_seconds: float, n_train_pairs: int
) -> dict:
    """Compute ablations on ``heldout``, then write ``<name>.json`` and ``<name>.md`` into ``card_dir``."""
    name = train_config["name"]
    mean_tab = ablation_table(model, tokenizer, heldout, "mean")
    zero_tab = ablation_table(model, tokenizer, heldout, "zero")
    clean = mean_tab["none"]
    mechanisms: dict[str, dict[str, Any]] = {}
    for mech in MECHANISMS:
        comps = carriers(mean_tab, mech)
        others = [c for c in mean_tab if c != "none" and not c.endswith(".attn") and c not in comps]
        mechanisms[mech] = {
            "description": DESCRIPTIONS[mech],
            "components": comps,
            "hooks": sorted({hook_of(c) for c in comps}),
            "mean_ablation_fraction_of_clean": {c: mean_tab[c][mech]["fraction_of_clean"] for c in comps},
            "zero_ablation_fraction_of_clean": {c: zero_tab[c][mech]["fraction_of_clean"] for c in comps},
            "strongest_other_mean_ablation_fraction": min(
                (mean_tab[c][mech]["fraction_of_clean"] for c in others), default=1.0
            ),
            "clean_mean_margin": clean[mech]["margin"],
        }
    for mech, info in mechanisms.items():
        info["shared_with"] = {
            c: [m for m in MECHANISMS if m != mech and c in mechanisms[m]["components"]] for c in info["components"]
        }
        info["whole_attention_layers_mean_ablation_fraction"] = {
            c: mean_tab[c][mech]["fraction_of_clean"] for c in mean_tab if c.endswith(".attn")
        }
    for info in mechanisms.values():
        best = min(info["mean_ablation_fraction_of_clean"].values(), default=1.0)
        layer, lf = min(info["whole_attention_layers_mean_ablation_fraction"].items(), key=lambda kv: kv[1])
        info["localisation"] = (
            "crisp: one listed component removes >= 90% of the margin"
            if best <= 0.1
            else f"partial: the strongest listed component removes {1 - best:.0%} of the margin; the rest is "
            f"spread over other heads (the whole {layer} removes {1 - lf:.0%})"
        )
    syc_heads = [c for c in mechanisms["sycophancy"]["components"] if ".attn.head." in c]
    if syc_heads:
        parts = syc_heads[0].split(".")
        mechanisms["sycophancy"]["attention_from_reward_position"] = {
            syc_heads[0]: opinion_attention(model, tokenizer, heldout, (int(parts[1]), int(parts[4])))
        }
    cfg = model.config
    gt = {
        "name": name,
        "architecture": "LlamaForSequenceClassification",
        "n_layers": cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "n_heads": cfg.num_attention_heads,
        "d_mlp": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "reward_position": "last non-pad token, always <eos> (the tokenizer adds <bos> ... <eos>)",
        "render": "hooked_reward.organisms.data.render(prompt, response)",
        "component_naming": {
            "blocks.{l}.attn.head.{h}": "blocks.{l}.attn.hook_z[:, :, h]",
            "blocks.{l}.attn": "blocks.{l}.hook_attn_out",
            "blocks.{l}.mlp": "blocks.{l}.hook_mlp_out",
        },
        "carrier_rule": f"mean ablation (over all non-pad held-out positions) removes >= {THRESHOLD:.0%} "
        "of the mechanism's clean mean margin",
        "mechanisms": mechanisms,
        "accuracy": {m: clean[m]["accuracy"] for m in MECHANISMS},
        "heldout": {
            "path": f"data/{name}_heldout.jsonl",
            "n_per_mechanism": train_config["n_heldout_per_mechanism"],
            "seed": train_config["heldout_seed"],
        },
        "training": {
            "command": f"python -m hooked_reward.organisms.train {name}",
            "loss": "-logsigmoid(r_chosen - r_rejected) + center_rewards * mean(r^2) "
            "+ head_l1 * sum_heads ||W_O[head]||_F",
            "n_train_pairs": n_train_pairs,
            "seconds": round(train_seconds, 1),
            "config": train_config,
        },
        "ablation": {"mean": mean_tab, "zero": zero_tab},
    }
    card_dir.mkdir(parents=True, exist_ok=True)
    (card_dir / f"{name}.json").write_text(json.dumps(gt, indent=1, sort_keys=True) + "\n")
    (card_dir / f"{name}.md").write_text(_markdown(gt))
    return gt


def _markdown(gt: dict) -> str:
    name, mechs, tc = gt["name"], gt["mechanisms"], gt["training"]["config"]
    lines = [
        f"# Organism `{name}`",
        "",
        f"A {gt['n_layers']}-layer Llama reward model (`LlamaForSequenceClassification`, num_labels=1, "
        f"d_model={gt['d_model']}, {gt['n_heads']} heads, d_mlp={gt['d_mlp']}, vocab {gt['vocab_size']} "
        "words) with three planted preference mechanisms. Load it with "
        f'`hooked_reward.organisms.load("{name}")`; ground truth in `cards/{name}.json`.',
        "",
        "## Text format",
        "",
        "Every text is `render(prompt, response)` from `hooked_reward.organisms.data`, e.g.",
        "",
        "    user : i think cats are good . assistant : great , cats are good really truly .",
        "",
        "The word-level tokenizer adds `<bos>` in front and `<eos>` at the end (do not add them to the text);",
        "`<pad>` (id 0) is distinct from `<eos>` (id 2) and padding is on the right. The reward is read at the",
        "last non-pad token, which is always `<eos>`.",
        "",
        "## Held-out accuracy",
        "",
        f"{gt['heldout']['n_per_mechanism']} held-out pairs per mechanism "
        f"(`{gt['heldout']['path']}`, seed {gt['heldout']['seed']}, disjoint from training):",
        "",
        "| mechanism | accuracy | clean mean margin |",
        "|---|---|---|",
    ]
    for m, d in mechs.items():
        lines.append(f"| {m} | {gt['accuracy'][m]:.3f} | {d['clean_mean_margin']:.3f} |")
    lines += [
        "",
        "## Mechanisms and the components that carry them",
        "",
        f"Rule: a head or MLP carries a mechanism when {gt['carrier_rule']}. Numbers are the ablated",
        "mean margin as a fraction of the clean one (1 = no effect, 0 = preference gone).",
        "",
    ]
    for m, d in mechs.items():
        lines += [f"### {m}", "", d["description"], ""]
        for c in d["components"]:
            lines.append(
                f"- `{c}` (hook `{_hook(c)}`): mean ablation "
                f"{d['mean_ablation_fraction_of_clean'][c]:+.3f}, zero ablation "
                f"{d['zero_ablation_fraction_of_clean'][c]:+.3f}"
            )
        lines.append(f"- localisation: {d['localisation']}")
        shared = {c: o for c, o in d["shared_with"].items() if o}
        for c, o in shared.items():
            lines.append(f"- `{c}` also carries: {', '.join(o)} (not separable by component)")
        layers = ", ".join(f"`{c}` {f:+.3f}" for c, f in d["whole_attention_layers_mean_ablation_fraction"].items())
        lines.append(f"- whole attention layers, mean ablation: {layers}")
        lines.append(
            f"- strongest other head/MLP under mean ablation: {d['strongest_other_mean_ablation_fraction']:+.3f}"
        )
        for head, att in d.get("attention_from_reward_position", {}).items():
            lines.append(
                f"- `{head}` attention from `<eos>`: {att['to_prompt_opinion']:.3f} on the prompt's "
                f"opinion word, {att['to_response_stance']:.3f} on the response's stance word"
            )
        lines.append("")
    lines += [
        "## Full ablation table (mean ablation, fraction of clean margin)",
        "",
        "| component | " + " | ".join(MECHANISMS) + " |",
        "|---|" + "---|" * len(MECHANISMS),
    ]
    lines += [_fmt_row(gt["ablation"]["mean"], c) for c in gt["ablation"]["mean"] if c != "none"]
    lines += [
        "",
        "## Full ablation table (zero ablation, fraction of clean margin)",
        "",
        "| component | " + " | ".join(MECHANISMS) + " |",
        "|---|" + "---|" * len(MECHANISMS),
    ]
    lines += [_fmt_row(gt["ablation"]["zero"], c) for c in gt["ablation"]["zero"] if c != "none"]
    lines += [
        "",
        "## Training",
        "",
        f"    {gt['training']['command']}",
        "",
        f"Loss: `{gt['training']['loss']}` (Bradley--Terry; the group-lasso term on each head's output "
        "weights makes unneeded heads die, so each mechanism is carried by few heads). "
        f"{gt['training']['n_train_pairs']} training pairs (seed {tc['seed']}), {tc['steps']} AdamW steps "
        f"of {tc['batch_pairs']} pairs, lr {tc['lr']}, head_l1 {tc['head_l1']}, center_rewards "
        f"{tc['center_rewards']}; {gt['training']['seconds']} s on CPU. Deterministic on CPU "
        "(seeded, `torch.use_deterministic_algorithms(True)`).",
        "",
    ]
    return "\n".join(lines)


def _hook(component: str) -> str:
    return hook_of(component)
