"""What a command is: the parts every `hooked-reward` sub-command declares, which the CLI runs on one generic path.

    class Faithfulness(Command):
        name, help, default_out = "faithfulness", "DRA vs patching agreement over pairs", "hooked_reward_faithfulness"
        def settings(self, inputs): ...            # what changes a unit's numbers (hashed into the store's key)
        def units(self, inputs): ...               # the units of work (`Unit`: one pair, one factor, ...)
        def compute_unit(self, inputs, unit): ...  # one unit's result, computed on its own
        def summarise(self, inputs, rows): ...     # the rows of every unit, in unit order -> result objects
        def write_report(self, result, inputs, out_dir, provenance): ...   # calls a `report/` renderer
    COMMAND = Faithfulness()

The CLI (`hooked_reward.cli`) parses the arguments (the common ones plus `add_arguments`), calls
`check_arguments` (cheap: before any model is loaded), loads the model(s) and pairs into `Inputs`, opens the
`Study` (`settings`), runs it (`run`: `units` -> `Study.run(compute_unit)` -> `summarise`, on rank 0; other ranks
of a torchrun launch get None), and writes the report with the provenance. A command is one module in
`hooked_reward/study/` holding its `COMMAND`, plus its line in `study/registry.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hooked_reward.study.runner import Study, Unit

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.pairs import PreferencePair

__all__ = ["Command", "Inputs"]


@dataclass
class Inputs:
    """What the CLI loaded for one command, before its study opens.

    `args`: the parsed command line; `model` (and `models[flag]` for each of `Command.extra_models`, e.g.
    `compare`'s `model_b`), and `names[flag]` how each is named in a report; `render`: how the model's text pairs
    are rendered (None: its chat template);
    `bundled`: a bundled organism's held-out pairs (None for a user checkpoint); `pairs`: the rendered pairs the
    command reads (`Command.takes_pairs`; None otherwise), and `pairs_for[flag]` the same pairs rendered for each
    further model (as that model reads them: its own chat template); `organism`: the bundled organism's name,
    `card` its model card when its own pairs are analysed, `factors` its probe factors in its own vocabulary
    (organism inputs are resolved by the CLI: the study layer does not import the organisms); `output`:
    `--output` (index or name); `progress`: progress bars; `settings`: the command's `settings(inputs)`, set
    before the study opens.
    """

    args: argparse.Namespace
    model: HookedRewardModel
    render: Callable[[str, str], str] | None = None
    bundled: list[dict[str, Any]] | None = None
    pairs: list[PreferencePair] | None = None
    models: dict[str, HookedRewardModel] = field(default_factory=dict)
    pairs_for: dict[str, list[PreferencePair]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    organism: str | None = None
    card: dict[str, Any] | None = None
    factors: Mapping[str, Any] | None = None
    output: int | str | None = None
    progress: bool = True
    settings: dict[str, Any] = field(default_factory=dict)


class Command:
    """One sub-command: its name and help, its arguments, its units of work, the summary over them and the report
    it writes. Subclass it in `hooked_reward/study/NAME.py`, set the class attributes, override what differs."""

    #: The sub-command's name (`hooked-reward NAME`), its one-line help and default report folder.
    name: ClassVar[str]
    help: ClassVar[str]
    default_out: ClassVar[str]
    #: Whether it reads preference pairs (`--pairs`, `--max-pairs`; how many by default: `cli.ORGANISM_PAIRS`).
    takes_pairs: ClassVar[bool] = True
    #: Whether `--pairs` is optional: the command has data of its own (built-in probes, templates) and reads the
    #: user's pairs only when `--pairs` is given (`Inputs.pairs` is None otherwise).
    pairs_optional: ClassVar[bool] = False
    #: Further models it loads, by their flag's destination (e.g. `("model_b",)` for `--model-b`).
    extra_models: ClassVar[tuple[str, ...]] = ()
    #: The study's name in the results store (default: `name`; `demo` shares `analyze`'s store).
    study_name: ClassVar[str | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The command's own flags, after the common ones (model, pairs, output folder, model loading)."""

    def check_arguments(self, args: argparse.Namespace) -> None:
        """Refuse bad arguments (`InputError`) before anything is loaded; cheap."""

    def settings(self, inputs: Inputs) -> dict[str, Any]:
        """Every option that changes a unit's numbers (hashed into the store's key; the CLI adds `output` and
        `max_length`)."""
        return {}

    def n_pairs(self, inputs: Inputs) -> int | None:
        """The number of pairs recorded in the provenance (None: the command makes its own)."""
        return len(inputs.pairs) if inputs.pairs is not None else None

    def units(self, inputs: Inputs) -> Sequence[Unit]:
        """The units of work, in the order their results are summarised."""
        raise NotImplementedError(f"{type(self).__name__} lists no units")

    def compute_unit(self, inputs: Inputs, unit: Unit) -> Any:
        """One unit's result, computed from that unit alone (so it does not depend on how work is split)."""
        raise NotImplementedError(f"{type(self).__name__} computes no unit")

    def summarise(self, inputs: Inputs, rows: list[Any]) -> Any:
        """The result objects over every unit's result (`rows`, in unit order)."""
        return rows

    def run(self, study: Study, inputs: Inputs) -> Any | None:
        """`units` through the study (resumable, split over ranks), then `summarise`; None on ranks other than 0."""
        rows = study.run(
            self.units(inputs), lambda unit: self.compute_unit(inputs, unit), desc=self.name, progress=inputs.progress
        )
        return None if rows is None else self.summarise(inputs, rows)

    def provenance(self, inputs: Inputs) -> dict[str, Any]:
        """Entries the report's provenance adds for this command."""
        return {}

    def write_report(self, result: Any, inputs: Inputs, out_dir: str | Path, provenance: dict[str, Any]) -> Path:
        """Write the report folder (by a `report/` renderer); returns its `index.html`."""
        raise NotImplementedError(f"{type(self).__name__} writes no report")

    @property
    def store_name(self) -> str:
        return self.study_name or self.name
