"""`hooked-reward`: the command-line entry point.

    hooked-reward demo                                  # the bundled organism, no arguments needed
    hooked-reward analyze --model DIR --pairs FILE.jsonl
    hooked-reward probe [--model DIR]
    hooked-reward compare --model DIR --model-b DIR --pairs FILE.jsonl
    hooked-reward faithfulness [--model DIR --pairs FILE.jsonl]
    hooked-reward extensions [--model DIR]

Each command is one module of `hooked_reward.study` (its arguments, units, summary and report), listed in
`hooked_reward.study.registry`; this module builds the sub-commands from that table and runs every one on the
same path (`run_command`: parse, check the arguments, load, run the study, write). Each writes a report folder
(`index.html`, PNG plots, `report.json`) and prints its path. The folder is written
atomically (a temporary folder beside it, renamed into place at the end). Errors in the input print one line and
exit with status 2; anything unexpected prints a short message (the traceback with `--debug`) and exits 1.
"""

from __future__ import annotations

import argparse
import platform
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hooked_reward.study import registry
from hooked_reward.study.arguments import count, positive_int
from hooked_reward.study.registry import commands

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel
    from hooked_reward.study.command import Command

DEFAULT_ORGANISM = "sycophancy"
#: Pairs used by default from a bundled organism's own pairs (`--max-pairs` unset): a minute or less on a laptop CPU.
ORGANISM_PAIRS = 24


def _organism_name(model_dir: str | None) -> str | None:
    """The bundled organism `--model` names, by name or folder (None for a user checkpoint)."""
    from hooked_reward import organisms

    if model_dir is None:
        return DEFAULT_ORGANISM
    return organisms.resolve(model_dir)  # `--model sycophancy` or the organism's folder


def _load_model(args: argparse.Namespace, which: str = "model") -> tuple[Any, Callable[[str, str], str] | None, Any]:
    """The model named by `--model` (or `--model-b`), loaded with the model flags (`--dtype`, `--device`,
    `--device-map`, `--revision`, `--max-length`); how its text pairs are rendered (None: the checkpoint's chat
    template, see `PreferencePair.render`); and its bundled pairs (organisms only)."""
    from hooked_reward import HookedRewardModel, organisms
    from hooked_reward.errors import InputError

    model_dir = getattr(args, which, None)
    device = getattr(args, "device", None)
    device_map = getattr(args, "device_map", None)
    if device is not None and device_map is not None:
        raise InputError("Pass --device (one device) or --device-map auto (split over devices), not both.")
    kwargs: dict[str, Any] = {"dtype": getattr(args, "dtype", "float32"), "device_map": device_map or device}
    name = _organism_name(model_dir)
    if name is not None:
        model, render, bundled = organisms.load(name, **kwargs), organisms.render, organisms.load_pairs(name)
    elif model_dir is None:
        raise InputError(f"--{which.replace('_', '-')} is required: a checkpoint directory, a hub id or an organism.")
    else:
        model = HookedRewardModel.from_pretrained(model_dir, revision=getattr(args, "revision", None), **kwargs)
        render, bundled = None, None
    model.max_length = getattr(args, "max_length", None)
    from hooked_reward.outputs import output_index

    output_index(_output(args), model.output_names)  # a bad --output fails before the results store is opened
    return model, render, bundled


def _provenance(args: argparse.Namespace, model: HookedRewardModel | None = None) -> dict[str, Any]:
    """What made this report: the command line, model, versions, time (shown at the end of every report)."""
    import torch
    import transformers

    import hooked_reward

    organism = _organism_name(getattr(args, "model", None))
    info: dict[str, Any] = {
        "command": "hooked-reward " + " ".join(getattr(args, "argv", []) or [args.command]),
        "model": getattr(args, "model", None) or f"bundled organism '{DEFAULT_ORGANISM}'",
    }
    if organism is not None:
        info["organism"] = organism
    if model is not None:
        cfg = model.cfg
        info["architecture"] = f"{cfg.n_layers} layers, {cfg.n_heads} heads, d_model {cfg.d_model}"
        info["dtype, device"] = (
            f"{cfg.dtype}, {getattr(args, 'device_map', None) or getattr(args, 'device', None) or 'cpu'}"
        )
        if model.n_outputs > 1:
            from hooked_reward.outputs import output_index

            index = output_index(_output(args), model.output_names) or 0
            info["output analysed"] = f"{model.output_names[index]!r} (index {index} of {model.n_outputs})"
        if getattr(args, "max_length", None):
            info["max length"] = f"{args.max_length} tokens (prompt side cut)"
    if getattr(args, "pairs", None):
        info["pairs file"] = args.pairs
    info.update(
        {
            "hooked_reward": hooked_reward.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
    )
    return info


def _model_source(model_dir: str | None) -> str:
    """Where the model's weights are (a bundled organism's checkpoint folder, a local folder, or a hub id): hashed
    into the results store's key and recorded in the provenance."""
    from hooked_reward import organisms

    name = _organism_name(model_dir)
    return str(organisms.checkpoint_dir(name)) if name is not None else str(model_dir)


def _dist(args: argparse.Namespace) -> Any:
    """This process's place in a `torchrun` launch (one process without it); closed by `main`."""
    if getattr(args, "dist", None) is None:
        from hooked_reward.study.distributed import init_distributed

        args.dist = init_distributed(getattr(args, "device", None))
    return args.dist


def _load_on_device(args: argparse.Namespace, which: str = "model") -> tuple[Any, Any, Any]:
    """`_load_model`; under torchrun without --device/--device-map, each rank loads onto its own device
    (`cuda:LOCAL_RANK` when CUDA is available, else the CPU)."""
    dist = _dist(args)
    if dist.enabled and getattr(args, "device", None) is None and getattr(args, "device_map", None) is None:
        args.device = str(dist.device)
    return _load_model(args) if which == "model" else _load_model(args, which)


def _open_study(
    args: argparse.Namespace,
    model: HookedRewardModel,
    settings: dict[str, Any],
    n_pairs: int | None,
    others: list | None = None,
) -> Any:
    """The results store of this command (`OUT.store/`, beside the report), resumed unless --no-resume."""
    from hooked_reward.study.units import open_study

    settings = {**settings, "output": _output(args), "max_length": getattr(args, "max_length", None)}
    if getattr(args, "rendering", "chat") != "chat":
        settings["rendering"] = args.rendering
    return open_study(
        args.out,
        registry.command(args.command).store_name,
        model,
        _model_source(args.model),
        revision=getattr(args, "revision", None),
        others=others or (),
        settings=settings,
        seed=getattr(args, "seed", 0),
        n_pairs=n_pairs,
        resume=args.resume,
        dist=_dist(args),
    )


def _study_provenance(args: argparse.Namespace, model: HookedRewardModel, study: Any) -> dict[str, Any]:
    """The report's provenance: the command line, versions and time, plus the study's model fingerprint, dtype,
    device, settings, seed, pair count, processes and store; prints the store's counts on stderr."""
    from hooked_reward.study.provenance import merge_provenance

    for damaged in getattr(study, "damaged", []):  # records that failed their checksum: reported, recomputed
        print(f"{study.command}: {damaged}", file=sys.stderr)
    print(
        f"{study.command}: {study.computed} units computed here, {study.reused} from the store {study.store.dir}",
        file=sys.stderr,
    )
    return merge_provenance(_provenance(args, model), study.provenance)


def _pairs(
    args: argparse.Namespace, bundled: list[dict] | None, model: HookedRewardModel, render: Callable | None
) -> list:
    """The pairs of `--pairs` (any format `pairs.read_pairs` reads) or the organism's own, rendered into the texts
    the model scores (`PreferencePair.rendered`; unlabelled pairs are grouped as "unlabelled"), at most
    `--max-pairs` of them, balanced over the labels (`balanced_subset`; the number used is printed and is the
    report's `n_pairs`)."""
    from hooked_reward.errors import InputError
    from hooked_reward.pairs import PreferencePair, as_pairs, read_pairs

    if args.pairs:
        pairs = read_pairs(args.pairs)
    elif bundled is not None:
        pairs = as_pairs(bundled, where="bundled pairs")
    else:
        raise InputError(
            "--pairs FILE is needed for a model that is not a bundled organism (.jsonl, .json or .parquet; see "
            "`hooked-reward --help` or docs/cli.md for the formats)."
        )
    rendering = getattr(args, "rendering", "chat")
    rendered = []
    for p in pairs:
        r = p.rendered(model, render=None if rendering != "chat" else render, rendering=rendering)
        rendered.append(PreferencePair("", r.chosen, r.rejected, r.label or "unlabelled", r.metadata))
    pairs = rendered
    if args.max_pairs and args.max_pairs < len(pairs):
        total = len(pairs)
        pairs = balanced_subset(pairs, args.max_pairs)
        counts: dict[str, int] = {}
        for p in pairs:
            label = p.label or "unlabelled"  # rendered pairs are all labelled
            counts[label] = counts.get(label, 0) + 1
        print(
            f"--max-pairs {args.max_pairs}: using {len(pairs)} of {total} pairs, taken in file order and balanced "
            f"over labels ({', '.join(f'{k} {v}' for k, v in counts.items())}).",
            file=sys.stderr,
        )
    _refuse_identical_tokens(pairs, model)  # the pairs used, not the whole file
    return pairs


def balanced_subset(pairs: list, n: int) -> list:
    """At most `n` pairs, balanced over their labels: labels take turns (in order of first appearance), each
    giving its next pair in file order, until `n` are taken or every label is used up; so the labels' counts differ
    by at most one unless a label has fewer pairs, and then the others fill its share. Returned grouped by label
    (in order of first appearance), each label's pairs in file order."""
    groups: dict[str, list] = {}
    for p in pairs:
        groups.setdefault(p.label, []).append(p)
    taken = dict.fromkeys(groups, 0)
    left = n
    while left > 0 and any(taken[k] < len(g) for k, g in groups.items()):
        for k, g in groups.items():
            if left > 0 and taken[k] < len(g):
                taken[k] += 1
                left -= 1
    return [p for k, g in groups.items() for p in g[: taken[k]]]


def _refuse_identical_tokens(pairs: list, model: Any) -> None:
    """`InputError` for pairs whose two texts the model reads as the same tokens (after `--max-length`, or words
    its tokenizer does not know): their margin is 0 by construction, which would read as a loss."""
    import torch

    from hooked_reward.errors import InputError

    same = []
    for i, p in enumerate(pairs):
        chosen, rejected = model.tokenize(p.chosen)[0], model.tokenize(p.rejected)[0]
        if chosen.shape == rejected.shape and torch.equal(chosen, rejected):
            same.append(i)
    if same:
        cut = f" once cut to --max-length {model.max_length}" if model.max_length else ""
        raise InputError(
            f"Pair(s) {same[:10]}{' ...' if len(same) > 10 else ''} of {len(pairs)} give the model the same tokens "
            f"for chosen and rejected{cut} (first: {pairs[same[0]].chosen!r:.80}), so their margin is 0 by "
            "construction. "
            + ("Raise --max-length (it cuts the prompt side)." if cut else "Fix or remove those pairs.")
        )


def _short_name(model_dir: str | None) -> str:
    """How a model is named in a report: the organism's name, or the checkpoint folder's name."""
    organism = _organism_name(model_dir)
    return organism if organism is not None else Path(str(model_dir)).resolve().name


def _output(args: argparse.Namespace) -> int | str | None:
    """`--output`: an output's name, or its index when it is a number."""
    value = getattr(args, "output", None)
    return int(value) if value is not None and value.lstrip("-").isdigit() else value


def run_command(command: Command, args: argparse.Namespace) -> Path | None:
    """The one path every command takes: load the model(s) and pairs into `Inputs`, open the command's study,
    run it (`Command.run`), and write its report with the provenance. Returns the report's `index.html` (None on
    ranks other than 0 of a torchrun launch: their share is in the store)."""
    from hooked_reward import organisms
    from hooked_reward.study.command import Inputs

    model, render, bundled = _load_on_device(args)
    organism = _organism_name(args.model)
    inputs = Inputs(
        args=args,
        model=model,
        render=render,
        bundled=bundled,
        names={"model": _short_name(args.model)},
        organism=organism,
        card=organisms.card(organism) if organism is not None and getattr(args, "pairs", None) is None else None,
        output=_output(args),
        progress=not args.quiet,
    )
    if render is organisms.render:  # the organism's word-level vocabulary: its own factor templates
        from hooked_reward.organisms.factors import organism_factors

        inputs.factors = organism_factors()
    renders = {}
    for which in command.extra_models:
        inputs.models[which], renders[which], _ = _load_on_device(args, which)
        inputs.names[which] = _short_name(getattr(args, which))
    if command.takes_pairs and (args.pairs or not command.pairs_optional):
        inputs.pairs = _pairs(args, bundled, model, render)
        for which in command.extra_models:  # the same pairs, rendered as that model reads them
            inputs.pairs_for[which] = _pairs(args, bundled, inputs.models[which], renders[which])
    inputs.settings = command.settings(inputs)
    others = [(_model_source(getattr(args, which)), None) for which in command.extra_models]
    study = _open_study(args, model, inputs.settings, command.n_pairs(inputs), others)
    result = command.run(study, inputs)
    if result is None:  # a rank other than 0 of a torchrun launch: its share is in the store
        return None
    provenance = _study_provenance(args, model, study)
    provenance.update(command.provenance(inputs))
    if getattr(args, "capped", False) and inputs.pairs is not None and bundled and len(bundled) > ORGANISM_PAIRS:
        argv = " ".join(a for a in args.argv if a != "--quiet")
        provenance["pairs used"] = (
            f"{ORGANISM_PAIRS} of the organism's {len(bundled)} pairs (the default, about a minute on a laptop CPU); "
            f"the full study: hooked-reward {argv} --max-pairs 0"
        )
    return command.write_report(result, inputs, args.out, provenance)


DOCS = "https://github.com/hooked-reward/hooked_reward/blob/main/docs/cli.md"
DESCRIPTION = (
    "Interpretability for reward models: which components carry a reward model's preferences (reward lens, direct "
    "reward attribution, activation patching), probes for reward hacking, comparisons of two models. Each command "
    "writes a report folder (index.html, PNG plots, report.json) and prints its path. With no --model, the bundled "
    "organism (a tiny reward model with planted mechanisms) and its own pairs are used."
)
EXAMPLES = {
    "demo": "hooked-reward demo",
    "analyze": "hooked-reward analyze --model sycophancy\n"
    "  hooked-reward analyze --model path/to/rm --pairs pairs.jsonl",
    "probe": "hooked-reward probe --model armorm",
    "compare": "hooked-reward compare --model sycophancy --model-b path/to/other-rm --pairs pairs.jsonl",
    "faithfulness": "hooked-reward faithfulness --model sycophancy",
    "extensions": "hooked-reward extensions --model sycophancy",
}


def _epilog(names: Sequence[str]) -> str:
    lines = "\n  ".join(EXAMPLES[n] for n in names if n in EXAMPLES)
    return f"examples:\n  {lines}\n\ndocs: {DOCS} (GPUs and large models: docs/gpu-and-large-models.md)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hooked-reward",
        description=textwrap.fill(DESCRIPTION, 100),
        epilog=_epilog(list(registry.COMMANDS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, out: str, pairs: bool = True) -> None:
        p.add_argument(
            "--model", help="checkpoint folder or Hugging Face Hub id `org/name` (default: the bundled organism)"
        )
        if pairs:
            p.add_argument(
                "--pairs",
                help="preference pairs: .jsonl, .json or .parquet in TRL standard/conversational, RewardBench or our "
                "format (default: the organism's bundled pairs); see docs/cli.md",
            )
            p.add_argument(
                "--max-pairs",
                type=count,
                default=None,
                help=f"use at most this many pairs, balanced over labels; 0: all (default: all of --pairs; "
                f"{ORGANISM_PAIRS} of a bundled organism's own pairs: about a minute on a laptop CPU)",
            )
            p.add_argument(
                "--rendering",
                choices=["chat", "trl", "raw"],
                default="chat",
                help="how pairs become the texts the model reads: chat (default: the checkpoint's chat template for "
                "pairs with a prompt), trl (exactly as TRL's RewardTrainer tokenises its standard, implicit-prompt "
                "and conversational formats: prompt + response + eos, or the chat template), raw (the texts as given)",
            )
        p.add_argument("--out", default=out, help=f"report folder (default: {out}); replaced by the new report")
        p.add_argument("--quiet", action="store_true", help="no progress bars (ours, transformers' and the hub's)")
        p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
        p.add_argument(
            "--resume",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="reuse the results already in the store OUT.store/ for the same model, settings and library "
            "version (the default); --no-resume recomputes everything (the old store is moved aside)",
        )
        g = p.add_argument_group("model loading")
        g.add_argument("--revision", help="hub branch, tag or commit of --model (hub ids only)")
        g.add_argument(
            "--dtype",
            choices=["auto", "float32", "bfloat16", "float16"],
            default="float32",
            help="weights' dtype (default float32; auto: the checkpoint's own)",
        )
        g.add_argument("--device", help="run on this device, e.g. cuda, cuda:1, cpu (default: cpu)")
        g.add_argument(
            "--device-map", choices=["auto"], help="split the model over the GPUs and CPU (accelerate's device_map)"
        )
        g.add_argument("--batch-size", type=positive_int, default=32, help="texts per forward pass (default 32)")
        g.add_argument(
            "--max-length",
            type=positive_int,
            help="truncate each text to this many tokens, cutting the prompt side (the reward token is kept)",
        )
        g.add_argument("--output", help="the output of a multi-output head to analyse: its name or index (default 0)")

    for command in commands():
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help[:1].upper() + command.help[1:] + ".",
            epilog=_epilog([command.name]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        common(p, command.default_out, pairs=command.takes_pairs)
        command.add_arguments(p)
    # `verify` reads a report folder and its store: no model, no study, so not a registry command.
    verify = sub.add_parser(
        "verify", help="check a report folder and its results store (marker, files, study keys, record checksums)"
    )
    verify.add_argument("folder", help="the report folder (its store is FOLDER.store beside it)")
    verify.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    verify.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    verify.set_defaults(func=_verify, out=None)
    return parser


def _verify(args: argparse.Namespace) -> None:
    from hooked_reward.study.verify import report_verification

    report_verification(args.folder)


def _preflight(argv: Sequence[str]) -> str | None:
    """The checks that need no command module: `--pairs` names a file. Returns the error line, or None (the full
    parser then checks everything else, still before any model is loaded)."""
    if not argv or argv[0] not in registry.COMMANDS or {"-h", "--help"} & set(argv):
        return None
    light = argparse.ArgumentParser(add_help=False)
    light.add_argument("--pairs")
    try:
        known, _ = light.parse_known_args(argv[1:])
    except SystemExit:  # e.g. --pairs without a value: the full parser says so
        return None
    if known.pairs:
        path = Path(known.pairs)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            return (
                f"--pairs {known.pairs} {what}. Give a .jsonl, .json or .parquet file of preference pairs (formats: "
                "docs/cli.md), or leave --pairs out to use a bundled organism's own pairs."
            )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 2 bad input, 1 unexpected error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    problem = _preflight(argv)  # before any command module, torch or model is loaded: fails in well under 2 s
    if problem is not None:
        print(f"hooked-reward {argv[0]}: error: {problem}", file=sys.stderr)
        return 2
    from hooked_reward.errors import HookedRewardError, HookNameError
    from hooked_reward.report.html import check_output_dir
    from hooked_reward.run_warnings import one_per_kind

    args = build_parser().parse_args(argv)
    command = registry.command(args.command) if args.command in registry.COMMANDS else None
    args.argv = argv
    args.capped = False  # True: an organism's own pairs, cut to ORGANISM_PAIRS because --max-pairs was not given
    if getattr(args, "max_pairs", 0) is None:  # not given: all of --pairs, a documented cap on an organism's own
        args.capped = not getattr(args, "pairs", None)
        args.max_pairs = ORGANISM_PAIRS if args.capped else 0
    start = time.time()
    prefix = f"hooked-reward {args.command}"
    args.dist = None  # set by commands that run through the results store (torchrun-aware)
    if args.quiet:
        from hooked_reward._hf_logging import disable_hf_progress_bars

        disable_hf_progress_bars()
    lock = None
    try:
        if args.out is not None:  # commands that write a report (not `verify`)
            check_output_dir(args.out)  # before loading anything: a bad --out fails in a second, not after the run
            if command is not None:
                command.check_arguments(args)
            from hooked_reward.study.lock import RunLock

            lock = RunLock(args.out).acquire()  # one writer per --out (torchrun: rank 0 holds it for the launch)
        with one_per_kind(prefix):  # a per-pair warning is printed once, with its count
            out = run_command(command, args) if command is not None else args.func(args)
    except (HookedRewardError, HookNameError, FileNotFoundError) as err:
        print(f"{prefix}: error: {_cli_terms(_one_line(err))}", file=sys.stderr)
        return 2
    except OSError as err:
        message = _os_error(err, args.out)
        if message is None or args.debug:
            raise
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{prefix}: interrupted; no report written (a previous one is untouched). Finished units are kept in "
            "the results store beside the report folder: run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    except Exception as err:  # the CLI's last line of defence: a short message, not a wall
        if args.debug:
            raise
        print(
            f"{prefix}: unexpected error: {type(err).__name__}: {_one_line(err)}\n"
            "No report was written. Run again with --debug for the full traceback, and please report it.",
            file=sys.stderr,
        )
        return 1
    finally:
        if args.dist is not None:
            args.dist.close()
        if lock is not None:
            lock.release()
    if out is not None:  # None: a rank other than 0 of a torchrun launch (rank 0 writes the report)
        print(f"Report written to {out} ({time.time() - start:.1f} s)")
    return 0


#: Fixes the library states in Python terms, as the CLI's options say them (pattern, replacement).
_CLI_TERMS = (
    (r"`?model\.tokenize\([^)`]*max_length=(\w+)\)`?", r"--max-length \1"),
    (r"\bmax_length=(\d+)", r"--max-length \1"),
    (
        r"pass nan_policy='omit' to drop those rows \(the result says how many were dropped\)",
        "from Python, nan_policy='omit' drops those rows (the CLI refuses them)",
    ),
    (r"device_map / max_memory / dtype", "--device / --device-map / --dtype"),
    (
        r"^Unknown output (\S+); this head's outputs are (.*) \(pass a name or an index\)",
        r"Unknown --output \1; this head's outputs are \2 (pass --output with a name or an index)",
    ),
    (r"\boutput=(\S)", r"--output \1"),
    (r"\boutput=", "--output"),
)


def _cli_terms(message: str) -> str:
    """A library error's fix in the CLI's terms: `--max-length 512`, not `model.tokenize(..., max_length=512)`."""
    import re

    for pattern, replacement in _CLI_TERMS:
        message = re.sub(pattern, replacement, message)
    return message


def _os_error(err: OSError, out: str | None) -> str | None:
    """One line for the file-system errors a user can fix (a full disk, a quota, no permission, a read-only file
    system), naming the file and the fix; None for any other OSError (an unexpected error)."""
    import errno
    import shutil

    name = err.filename or (out or "the output folder")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        where = Path(str(name)).expanduser().absolute()
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            free = shutil.disk_usage(where).free
            left = f"{free / 2**20:.1f} MiB free there"
        except OSError:
            left = "free space unknown"
        what = "the disk is full" if err.errno == errno.ENOSPC else "the disk quota is exceeded"
        needed = getattr(err, "needed_bytes", None)
        need = f"that write needed {needed / 2**20:.2f} MiB" if needed else "the file being written needed more"
        return (
            f"{what} writing {name} ({left}; {need}). Free some space or give "
            "--out on another disk; finished units are kept in the results store, so the same command resumes."
        )
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write {name}: change its permissions, or give --out a folder you can write."
    if err.errno == errno.EROFS:
        return f"{name} is on a read-only file system: give --out a folder on a writable disk."
    return None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else text[:597] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
