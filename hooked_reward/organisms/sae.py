"""SAEs shipped with the model organisms (SAE-Lens format, under ``hooked_reward/organisms/saes/``), and the
recipes that train them: organism-specific, so they live with the organisms (the SAE code takes models, texts and
settings as arguments and knows nothing of them).

    >>> from hooked_reward import organisms
    >>> from hooked_reward.sae import attribute_pairs
    >>> from hooked_reward.organisms.sae import load_organism_sae
    >>> model = organisms.load("sycophancy")
    >>> sae = load_organism_sae("sycophancy", model=model)   # TopK, 16 latents, k=2, blocks.1.hook_resid_post

The sycophancy SAE reads the final residual at the reward position (``<eos>``), where the reward is an exact
linear function of the features (``attribute_pairs`` uses the linear method). That residual is about three
dimensional on the organism's texts (three principal components hold 99% of its variance), hence the small
dictionary. It is trained on fresh texts from the organism's generator (``generate_pairs(700, seed=2024)``, both
sides of every pair), not on the held-out pairs it is evaluated on. Regenerate with
``python -m hooked_reward.organisms.sae sycophancy``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hooked_reward.sae.autoencoder import SparseAutoencoder
from hooked_reward.sae.formats import load_sae, save_sae
from hooked_reward.sae.train import collect_activations, train_topk_sae_on_activations

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

PRETRAINED_DIR = Path(__file__).resolve().parent / "saes"

#: The recipe of each shipped SAE (``load_organism_sae`` reads ``<name>_<hook>/``; ``train_organism_sae`` re-runs it).
RECIPES: dict[str, dict[str, Any]] = {
    "sycophancy": {
        "hook_name": "blocks.1.hook_resid_post",
        "positions": "reward",
        "d_sae": 16,
        "k": 2,
        "steps": 800,
        "batch_size": 256,
        "seed": 0,
        "n_pairs_per_mechanism": 700,
        "data_seed": 2024,
    },
}


def _recipe(name: str) -> dict[str, Any]:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"no SAE is shipped for organism {name!r}; available: {sorted(RECIPES)}") from None


def organism_sae_dir(name: str) -> Path:
    """The directory of the organism's shipped SAE: ``organisms/saes/<name>_<hook_name>/``."""
    return PRETRAINED_DIR / f"{name}_{_recipe(name)['hook_name']}"


def organism_sae_texts(name: str) -> list[str]:
    """The texts the organism's SAE is trained on: both sides of fresh generated pairs, deduplicated, sorted."""
    from hooked_reward import organisms
    from hooked_reward.organisms.data import generate_pairs

    r = _recipe(name)
    if name != "sycophancy":  # only this organism's generator is wired in so far
        raise KeyError(f"no training texts defined for organism {name!r}")
    recs = generate_pairs(r["n_pairs_per_mechanism"], seed=r["data_seed"])
    return sorted({organisms.render(p["prompt"], p[side]) for p in recs for side in ("chosen", "rejected")})


def train_organism_sae(
    name: str, model: HookedRewardModel | None = None, *, seed: int | None = None
) -> SparseAutoencoder:
    """Re-run the recipe of the organism's shipped SAE (seeded; a few seconds on one CPU thread)."""
    from hooked_reward import organisms

    r = _recipe(name)
    model = model if model is not None else organisms.load(name)
    acts = collect_activations(
        model, organism_sae_texts(name), r["hook_name"], positions=r["positions"], batch_size=256
    )
    sae = train_topk_sae_on_activations(
        acts,
        d_sae=r["d_sae"],
        k=r["k"],
        steps=r["steps"],
        batch_size=r["batch_size"],
        seed=r["seed"] if seed is None else seed,
        progress=False,
        hook_name=r["hook_name"],
    )
    sae.cfg.metadata.update(
        positions=r["positions"],
        organism=name,
        training_texts=f"generate_pairs({r['n_pairs_per_mechanism']}, seed={r['data_seed']})",
    )
    return sae


def load_organism_sae(
    name: str = "sycophancy", model: HookedRewardModel | None = None, device: str | torch.device | None = None
) -> SparseAutoencoder:
    """The SAE shipped with organism ``name`` (SAE-Lens format); with ``model``, checked against its width."""
    path = organism_sae_dir(name)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing; regenerate it with python -m hooked_reward.organisms.sae {name}")
    return load_sae(path, model=model, device=device)


def main(argv: list[str] | None = None) -> None:
    """``python -m hooked_reward.organisms.sae [name ...]``: retrain and save the organisms' SAEs."""
    torch.set_num_threads(1)
    for name in (argv if argv is not None else sys.argv[1:]) or sorted(RECIPES):
        sae = train_organism_sae(name)
        out = save_sae(sae, organism_sae_dir(name))
        log = sae.training_log
        print(f"{name}: {out} (FVU {log.final_fvu:.4f}, {log.n_activations} activations)")


if __name__ == "__main__":
    main()
