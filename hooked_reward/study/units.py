"""What the commands' units share: how a study is opened and what identifies a pair's unit. (Per-unit results
are joined back with `LabeledTensor.concat` and sliced with `LabeledTensor.isel`.)

Each command (`hooked_reward.study.analyze`, `.faithfulness`, `.probe`, `.compare`, `.extensions`) lists its
units (`Unit`: one pair, one factor, one site), computes each on its own through `study.run` (so the results do
not depend on how the work is split over processes or interrupted), and rebuilds the analysis results from the
stored records, in unit order. Rank 0 gets the results; the other ranks get None (they only compute their share).

`open_study` builds the `Study` of a command: it fingerprints the model(s) (on rank 0, shared with the others),
records dtype and device, and opens the store beside the report folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.study.distributed import DistContext
from hooked_reward.study.provenance import model_fingerprint, model_runtime
from hooked_reward.study.runner import Study

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__all__ = ["open_study", "pair_input", "pair_label"]


def open_study(
    out_dir: str | Path,
    command: str,
    model: HookedRewardModel,
    source: str | Path,
    *,
    settings: dict[str, Any],
    revision: str | None = None,
    others: Sequence[tuple[str | Path, str | None]] = (),
    seed: int | None = None,
    n_pairs: int | None = None,
    resume: bool | None = None,
    dist: DistContext | None = None,
) -> Study:
    """The study of `command` on `model` (loaded from `source`, at `revision`); `others`: further models' (source,
    revision), e.g. `compare`'s second model. The weights are hashed once, on rank 0."""
    dist = dist or DistContext()
    mine: list[dict[str, Any]] = []  # hashed on rank 0 only; the other ranks receive its list
    if dist.is_main:
        mine = [model_fingerprint(source, revision)] + [model_fingerprint(s, r) for s, r in others]
    fingerprints = dist.broadcast(mine)
    return Study(
        out_dir,
        command,
        models=fingerprints,
        runtime=model_runtime(model),
        settings=settings,
        seed=seed,
        n_pairs=n_pairs,
        resume=resume,
        dist=dist,
    )


def pair_input(pair: PreferencePair) -> dict[str, str]:
    """What identifies a pair's unit: its rendered texts (exactly what the model reads: the commands pass pairs
    already rendered, `PreferencePair(prompt="", chosen=text, rejected=text, label=...)`), and the token ids a
    training tool gave them (`TokenizedText`, e.g. `--rendering trl`)."""
    out: dict = {"chosen": pair.chosen, "rejected": pair.rejected}
    for side in ("chosen", "rejected"):
        ids = getattr(out[side], "input_ids", None)
        if ids is not None:
            out[f"{side}_ids"] = list(ids)
    return out


def pair_label(pair: PreferencePair) -> str | None:
    """The pair's label (mechanism), stored with its unit."""
    return getattr(pair, "label", None)
