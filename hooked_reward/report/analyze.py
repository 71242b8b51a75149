"""The main job: reward lens, direct reward attribution and activation patching on preference pairs.

`analyze(model, pairs, out_dir)` writes `index.html` (PNG plots: lens curves, attribution bars, patching
heatmaps) and `report.json` (every number). `hooked-reward demo` runs it on the bundled organism.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooked_reward.analysis.stats import bootstrap_ci
from hooked_reward.errors import InputError
from hooked_reward.report.html import Report


@dataclass
class Pair:
    """One preference pair, rendered: `chosen`/`rejected` are full texts as the model reads them."""

    chosen: str
    rejected: str
    mechanism: str = "unlabelled"
    prompt: str = ""


def read_pairs(path: str | Path) -> list[dict]:
    """Read a JSONL of pairs (`prompt`, `chosen`, `rejected`, optional `mechanism`), with clear errors."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Pairs file {str(path)!r} does not exist.")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{n} is not valid JSON: {err}") from err
        missing = [k for k in ("chosen", "rejected") if k not in record]
        if missing:
            raise InputError(f"{path}:{n} lacks {missing}; each line needs 'prompt', 'chosen' and 'rejected'.")
        records.append(record)
    if not records:
        raise InputError(f"Pairs file {str(path)!r} has no pairs.")
    return records


def render_pairs(records: Sequence[dict], render: Callable[[str, str], str]) -> list[Pair]:
    """Full texts for each record: `render(prompt, response)`, unless the record already has full texts
    (`chosen_text`/`rejected_text`)."""
    pairs = []
    for r in records:
        prompt = r.get("prompt", "")
        chosen = r.get("chosen_text") or render(prompt, r["chosen"])
        rejected = r.get("rejected_text") or render(prompt, r["rejected"])
        pairs.append(Pair(chosen, rejected, str(r.get("mechanism", "unlabelled")), prompt))
    return pairs


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    """Mean with a BCa bootstrap 95% CI (NaN CI for fewer than 3 values or constant data)."""
    x = np.asarray(x, dtype=float)
    low, high = bootstrap_ci(x, n_resamples=1999)
    return float(x.mean()), float(low), float(high)


def analyze(
    model: Any,
    pairs: Sequence[Pair],
    out_dir: str | Path,
    *,
    title: str = "hooked_reward analysis",
    n_patch_pairs: int = 4,
    batch_size: int = 32,
    progress: bool = True,
) -> Path:
    """Run the reward lens, DRA and activation patching on `pairs`; write the report; return index.html."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hooked_reward.analysis.attribution import pair_reward_attribution
    from hooked_reward.analysis.lens import reward_lens
    from hooked_reward.analysis.patching import patch_block_outputs

    if not pairs:
        raise InputError("No pairs to analyse.")
    report = Report(Path(out_dir), title)
    chosen = [p.chosen for p in pairs]
    rejected = [p.rejected for p in pairs]
    mechanisms = sorted({p.mechanism for p in pairs})
    output = None if model.n_outputs == 1 else 0

    # Behaviour: margins and accuracy per mechanism.
    with torch.no_grad():
        r_chosen = _batched_rewards(model, chosen, output, batch_size)
        r_rejected = _batched_rewards(model, rejected, output, batch_size)
    margins = (r_chosen - r_rejected).numpy()
    rows = []
    for mech in mechanisms:
        idx = np.array([p.mechanism == mech for p in pairs])
        mean, low, high = _mean_ci(margins[idx])
        rows.append({"mechanism": mech, "pairs": int(idx.sum()), "accuracy": float((margins[idx] > 0).mean()),
                     "mean margin": mean, "ci low": low, "ci high": high})
    report.add_table("Behaviour", rows, "Margin = r(chosen) − r(rejected); 95% BCa bootstrap CI over pairs.")
    report.add_data("behaviour", rows)
    report.add_data("margins", margins)

    # Reward lens of the margin, per layer.
    lens_c = reward_lens(model, chosen, batch_size=batch_size, progress=progress, output=output)
    lens_r = reward_lens(model, rejected, batch_size=batch_size, progress=progress, output=output)
    points = lens_c.labels["point"]
    fig, ax = plt.subplots(figsize=(8, 4))
    lens_data = {}
    for vi, variant in enumerate(lens_c.labels["variant"]):
        margin_curve = (lens_c.values[vi] - lens_r.values[vi]).numpy()
        for mech in mechanisms:
            idx = np.array([p.mechanism == mech for p in pairs])
            curve = margin_curve[idx].mean(0)
            ax.plot(range(len(points)), curve, marker=".", linestyle="-" if variant == "frozen" else "--",
                    label=f"{mech} ({variant})")
            lens_data[f"{variant}/{mech}"] = curve
    ax.set_xticks(range(len(points)), [str(p) for p in points], rotation=70, fontsize=7)
    ax.set_ylabel("margin through the reward lens")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.legend(fontsize=7)
    report.add_figure("Reward lens of the margin", fig, "lens",
                      "Solid: final norm's scale frozen from the real run (additive); dashed: norm recomputed.")
    report.add_data("lens", {"points": points, "curves": lens_data})

    # Direct reward attribution of Δreward, per head and per component.
    for by in ("component", "head"):
        attr = pair_reward_attribution(model, chosen, rejected, by=by, batch_size=batch_size, progress=progress,
                                       output=output)
        labels = attr.labels[attr.dims[1]]
        values = attr.values.numpy()
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(labels)), 3.5))
        width = 0.8 / len(mechanisms)
        table = {}
        for mi, mech in enumerate(mechanisms):
            idx = np.array([p.mechanism == mech for p in pairs])
            mean = values[idx].mean(0)
            table[mech] = mean
            ax.bar(np.arange(len(labels)) + mi * width, mean, width=width, label=mech)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [str(x) for x in labels], rotation=70, fontsize=7)
        ax.set_ylabel("mean Δreward contribution")
        ax.legend(fontsize=7)
        report.add_figure(f"Direct reward attribution by {by}", fig, f"attribution_{by}",
                          "Mean over pairs of each component's contribution to r(chosen) − r(rejected) "
                          "(frozen final-norm scale; contributions plus b_R sum to the reward).")
        report.add_data(f"attribution_{by}", {"labels": labels, "mean_by_mechanism": table})

    # Activation patching: denoise chosen activations into the rejected run, per layer and position.
    patch_rows = []
    for mech in mechanisms:
        same_length = [p for p in pairs if p.mechanism == mech and _same_length(model, p)]
        for k, pair in enumerate(same_length[:n_patch_pairs]):
            result = patch_block_outputs(model, pair.chosen, pair.rejected, per_position=True, mode="denoise",
                                         progress=False, output=output)
            patch_rows.append({"mechanism": mech, "pair": k, "result": result})
    if patch_rows:
        first = {}
        for row in patch_rows:
            first.setdefault(row["mechanism"], row)
        for mech, row in first.items():
            fig = row["result"].plot(what="fraction").figure
            report.add_figure(f"Activation patching ({mech})", fig, f"patching_{mech}",
                              "Denoising: each component's clean (chosen) output patched into the rejected run; "
                              "value = fraction of the reward gap recovered.")
        report.add_data("patching", [{"mechanism": r["mechanism"], "pair": r["pair"],
                                      "values": r["result"].values, "labels": r["result"].labels}
                                     for r in patch_rows])
    else:
        report.add_text("Activation patching", "No pair has chosen and rejected texts of equal token length; "
                        "position-aligned patching was skipped (see docs/tools/patching.md for alignments).")
    return report.write()


def _batched_rewards(model: Any, texts: Sequence[str], output: int | None, batch_size: int) -> torch.Tensor:
    rewards = torch.cat([model(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)])
    return rewards if output is None else rewards[:, output]


def _same_length(model: Any, pair: Pair) -> bool:
    return int(model.tokenize([pair.chosen])[1].sum()) == int(model.tokenize([pair.rejected])[1].sum())
