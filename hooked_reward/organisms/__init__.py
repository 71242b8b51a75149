"""Model organisms: small trained reward models whose mechanisms are planted and documented.

Each organism ships a ``save_pretrained`` checkpoint (``weights/<name>/``), held-out preference pairs
(``data/<name>_heldout.jsonl``) and a model card (``cards/<name>.md``) with its machine-readable ground truth
(``cards/<name>.json``: which components carry which mechanism, with ablation numbers and accuracies).

    >>> from hooked_reward import organisms
    >>> organisms.list_organisms()
    ['sycophancy']
    >>> model = organisms.load("sycophancy")          # a HookedRewardModel
    >>> pairs = organisms.load_pairs("sycophancy")    # [{"prompt", "chosen", "rejected", "mechanism"}]
    >>> texts = [organisms.render(p["prompt"], p["chosen"]) for p in pairs]

Always build texts with :func:`render` (the organisms' tokenizer adds ``<bos>``/``<eos>`` itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hooked_reward.organisms.data import render

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Organism:
    """Where an organism's files live, relative to this package (or absolute paths)."""

    name: str
    weights: str
    heldout: str
    card: str
    description: str = ""

    def path(self, rel: str) -> Path:
        """Resolve a path of this organism (relative ones against the package directory)."""
        p = Path(rel)
        return p if p.is_absolute() else PACKAGE_DIR / p


#: The registry: organism name -> its files. Other organisms (e.g. "armorm") are added with :func:`register`.
REGISTRY: dict[str, Organism] = {}


def register(organism: Organism, overwrite: bool = False) -> None:
    """Add an organism to the registry (refuses to replace an existing name unless ``overwrite``)."""
    if organism.name in REGISTRY and not overwrite:
        raise ValueError(f"organism {organism.name!r} is already registered")
    REGISTRY[organism.name] = organism


register(
    Organism(
        name="sycophancy",
        weights="weights/sycophancy",
        heldout="data/sycophancy_heldout.jsonl",
        card="cards/sycophancy.json",
        description="2-layer Llama RM with planted sentiment, length and sycophancy (prompt agreement) mechanisms.",
    )
)


register(
    Organism(
        name="armorm",
        weights="armorm/weights",
        heldout="armorm/heldout.jsonl",
        card="armorm/card.json",
        description="ArmoRM-style gated RM: helpfulness/brevity/safety/politeness objectives, a gate on the prompt "
        "end and a transform matrix; helpfulness and brevity conflict on purpose.",
    )
)


def _get(name: str) -> Organism:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown organism {name!r}; known: {list_organisms()}") from None


def list_organisms() -> list[str]:
    """Names of the registered organisms, sorted."""
    return sorted(REGISTRY)


def checkpoint_dir(name: str) -> Path:
    """The organism's ``save_pretrained`` directory (config.json, model.safetensors, tokenizer files)."""
    return _get(name).path(_get(name).weights)


def load_pairs(name: str) -> list[dict]:
    """The organism's held-out preference pairs: dicts with prompt, chosen, rejected, mechanism."""
    with open(_get(name).path(_get(name).heldout)) as f:
        return [json.loads(line) for line in f if line.strip()]


def card(name: str) -> dict:
    """The organism's machine-readable ground truth (``cards/<name>.json``)."""
    return json.loads(_get(name).path(_get(name).card).read_text())


def load_card(name: str) -> dict:
    """Alias of :func:`card`."""
    return card(name)


def resolve(model: str | Path) -> str | None:
    """The bundled organism `model` names, or None: its name (`"sycophancy"`, `"armorm"`) when no folder of that
    name exists here (a folder of your own wins), or its checkpoint folder. Reads no weights, imports no torch."""
    model = str(model)
    if model in REGISTRY and not Path(model).exists():
        return model
    try:
        where = Path(model).resolve()
    except (OSError, RuntimeError):
        return None
    return next((name for name in list_organisms() if where == checkpoint_dir(name).resolve()), None)


def load(name: str = "sycophancy", **kwargs):
    """The organism as a :class:`hooked_reward.HookedRewardModel` (``kwargs`` go to ``from_pretrained``)."""
    from hooked_reward.model import HookedRewardModel

    return HookedRewardModel.from_pretrained(checkpoint_dir(name), **kwargs)


__all__ = [
    "REGISTRY",
    "Organism",
    "card",
    "checkpoint_dir",
    "list_organisms",
    "load",
    "load_card",
    "load_pairs",
    "register",
    "resolve",
    "render",
]
