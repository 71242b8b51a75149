"""The commands of `hooked-reward`, by name: each is one module of `hooked_reward.study` holding its `COMMAND` (a
`study.command.Command`). The CLI builds its sub-commands from this table, in this order; adding a command is
one new module plus its line here."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hooked_reward.errors import InputError

if TYPE_CHECKING:  # importing this table loads no command (nor torch): the CLI checks arguments first
    from hooked_reward.study.command import Command

__all__ = ["COMMANDS", "command", "commands"]

#: Command name -> the module that defines its `COMMAND`.
COMMANDS: dict[str, str] = {
    "demo": "hooked_reward.study.demo",
    "analyze": "hooked_reward.study.analyze",
    "probe": "hooked_reward.study.probe",
    "compare": "hooked_reward.study.compare",
    "faithfulness": "hooked_reward.study.faithfulness",
    "extensions": "hooked_reward.study.extensions",
    "circuit": "hooked_reward.study.circuit",
}


def command(name: str) -> Command:
    """The command called `name`."""
    from hooked_reward.study.command import Command

    if name not in COMMANDS:
        raise InputError(f"Unknown command {name!r}; the commands are {', '.join(COMMANDS)}.")
    found = importlib.import_module(COMMANDS[name]).COMMAND
    if not isinstance(found, Command) or found.name != name:
        raise TypeError(f"{COMMANDS[name]}.COMMAND must be a Command named {name!r}, got {found!r}.")
    return found


def commands() -> list[Command]:
    """Every command, in the registry's order."""
    return [command(name) for name in COMMANDS]
