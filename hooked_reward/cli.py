"""`hooked-reward`: the command-line entry point.

    hooked-reward demo                                  # the bundled organism, no arguments needed
    hooked-reward analyze --model DIR --pairs FILE.jsonl
    hooked-reward probe [--model DIR]
    hooked-reward compare --model DIR --model-b DIR --pairs FILE.jsonl
    hooked-reward faithfulness [--model DIR --pairs FILE.jsonl]
    hooked-reward extensions [--model DIR]

Each writes a report folder (`index.html`, PNG plots, `report.json`) and prints its path. The folder is written
atomically (a temporary folder beside it, renamed into place at the end). Errors in the input print one line and
exit with status 2; anything unexpected prints a short message (the traceback with `--debug`) and exits 1.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_ORGANISM = "sycophancy"


def _organism_name(model_dir: str | None) -> str | None:
    """The bundled organism a `--model` directory is (None for a user checkpoint)."""
    from hooked_reward import organisms

    if model_dir is None:
        return DEFAULT_ORGANISM
    for name in organisms.list_organisms():
        if Path(model_dir).resolve() == organisms.checkpoint_dir(name).resolve():
            return name
    return None


def _load_model(model_dir: str | None) -> tuple[Any, Callable[[str, str], str], list[dict] | None]:
    """The model, how its texts are rendered, and its bundled pairs (organisms only)."""
    from hooked_reward import HookedRewardModel, organisms

    name = _organism_name(model_dir)
    if name is not None:
        return organisms.load(name), organisms.render, organisms.load_pairs(name)
    model = HookedRewardModel.from_pretrained(model_dir)
    return model, model.render_chat, None


def _provenance(args: argparse.Namespace, model: Any = None) -> dict[str, Any]:
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


def _pairs(args: argparse.Namespace, bundled: list[dict] | None, render: Callable[[str, str], str]) -> list:
    from hooked_reward.errors import InputError
    from hooked_reward.report.analyze import read_pairs, render_pairs

    if args.pairs:
        records = read_pairs(args.pairs)
    elif bundled is not None:
        records = bundled
    else:
        raise InputError("--pairs FILE.jsonl is needed for a model that is not a bundled organism.")
    pairs = render_pairs(records, render)
    if args.max_pairs:
        by_mech: dict[str, list] = {}
        for p in pairs:
            by_mech.setdefault(p.label, []).append(p)
        per = max(1, args.max_pairs // max(1, len(by_mech)))
        pairs = [p for group in by_mech.values() for p in group[:per]]
    return pairs


def cmd_analyze(args: argparse.Namespace) -> Path:
    from hooked_reward import organisms
    from hooked_reward.report.analyze import analyze

    model, render, bundled = _load_model(args.model)
    pairs = _pairs(args, bundled, render)
    organism = _organism_name(args.model)
    planted = organisms.card(organism) if organism is not None and args.pairs is None else None
    what = f"the {organism} organism" if organism is not None else args.model
    return analyze(
        model,
        pairs,
        args.out,
        title=f"How {what} rewards its pairs",
        planted=planted,
        provenance=_provenance(args, model),
        command=args.command,
        progress=not args.quiet,
    )


def cmd_probe(args: argparse.Namespace) -> Path:
    from hooked_reward import organisms
    from hooked_reward.analysis.probes import run_probe_suite
    from hooked_reward.organisms.factors import organism_factors
    from hooked_reward.report import write_probe_report

    model, render, bundled = _load_model(args.model)
    kwargs: dict[str, Any] = {}
    if render is organisms.render:  # the organism's word-level vocabulary: its own factor templates
        kwargs = {"factors": organism_factors(), "render": organisms.render}
    result = run_probe_suite(
        model, n_pairs=args.n_pairs, seed=args.seed, progress=not args.quiet, min_effect=args.min_effect, **kwargs
    )
    return write_probe_report(result, args.out, provenance=_provenance(args, model))


def cmd_compare(args: argparse.Namespace) -> Path:
    from hooked_reward.analysis.compare import compare_models
    from hooked_reward.report import write_compare_report

    model_a, render, bundled = _load_model(args.model)
    model_b, _, _ = _load_model(args.model_b)
    pairs = _pairs(args, bundled, render)
    records = [{"prompt": "", "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    result = compare_models(model_a, model_b, records, render_a=_identity, render_b=_identity, progress=not args.quiet)
    provenance = _provenance(args, model_a)
    provenance["model B"] = args.model_b
    return write_compare_report(result, args.out, provenance=provenance)


def _identity(prompt: str, response: str) -> str:
    return response


def cmd_faithfulness(args: argparse.Namespace) -> Path:
    from hooked_reward.report.faithfulness import write_faithfulness_report

    model, render, bundled = _load_model(args.model)
    pairs = _pairs(args, bundled, render)
    return write_faithfulness_report(
        model, pairs, args.out, provenance=_provenance(args, model), progress=not args.quiet
    )


def cmd_extensions(args: argparse.Namespace) -> Path:
    from hooked_reward import organisms
    from hooked_reward.report import write_extensions_report

    model, render, bundled = _load_model(args.model)
    kwargs: dict[str, Any] = {}
    if bundled is not None:  # an organism: its own held-out pairs, grouped by mechanism
        dims: dict[str, list[tuple[str, str]]] = {}
        for p in bundled:
            group = dims.setdefault(p["mechanism"], [])
            if len(group) < 40:
                group.append((organisms.render(p["prompt"], p["chosen"]), organisms.render(p["prompt"], p["rejected"])))
        kwargs = {"dimensions": dims, "render": organisms.render}
    return write_extensions_report(
        model, args.out, progress=not args.quiet, provenance=_provenance(args, model), **kwargs
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooked-reward", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, out: str, pairs: bool = True) -> None:
        p.add_argument("--model", help="checkpoint directory (default: the bundled organism)")
        if pairs:
            p.add_argument("--pairs", help="JSONL of {prompt, chosen, rejected, mechanism} (default: bundled pairs)")
            p.add_argument("--max-pairs", type=int, default=0, help="use at most this many pairs (0: all)")
        p.add_argument("--out", default=out, help=f"report folder (default: {out}); replaced by the new report")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")

    demo = sub.add_parser("demo", help="lens, attribution and patching on the bundled organism")
    common(demo, "hooked_reward_report")
    demo.set_defaults(func=cmd_analyze, max_pairs_default=48)
    analyze = sub.add_parser("analyze", help="lens, attribution and patching on your checkpoint and pairs")
    common(analyze, "hooked_reward_report")
    analyze.set_defaults(func=cmd_analyze)
    probe = sub.add_parser("probe", help="the reward-hacking probe suite")
    common(probe, "hooked_reward_probe", pairs=False)
    probe.add_argument("--n-pairs", type=int, default=30)
    probe.add_argument("--seed", type=int, default=0)
    probe.add_argument(
        "--min-effect",
        type=float,
        default=None,
        help="smallest mean Δ (reward units) that matters: each factor says whether its CI excludes it",
    )
    probe.set_defaults(func=cmd_probe)
    compare = sub.add_parser("compare", help="compare two reward models on the same pairs")
    common(compare, "hooked_reward_compare")
    compare.add_argument("--model-b", required=True, help="the second checkpoint directory")
    compare.set_defaults(func=cmd_compare)
    faith = sub.add_parser("faithfulness", help="DRA vs patching agreement over pairs")
    common(faith, "hooked_reward_faithfulness")
    faith.set_defaults(max_pairs_default=30)
    faith.set_defaults(func=cmd_faithfulness)
    ext = sub.add_parser("extensions", help="the five extensions")
    common(ext, "hooked_reward_extensions", pairs=False)
    ext.set_defaults(func=cmd_extensions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0 done, 2 bad input, 1 unexpected error, 130 interrupted)."""
    from hooked_reward.errors import HookedRewardError, HookNameError
    from hooked_reward.report.html import check_output_dir

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "max_pairs", None) == 0 and getattr(args, "max_pairs_default", None):
        args.max_pairs = args.max_pairs_default
    start = time.time()
    prefix = f"hooked-reward {args.command}"
    try:
        check_output_dir(args.out)  # before loading anything: a bad --out fails in a second, not after the run
        out = args.func(args)
    except (HookedRewardError, HookNameError, FileNotFoundError) as err:
        print(f"{prefix}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; no report written (a previous one is untouched).", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's last line of defence: a short message, not a wall
        if args.debug:
            raise
        print(
            f"{prefix}: unexpected error: {type(err).__name__}: {_one_line(err)}\n"
            "No report was written. Run again with --debug for the full traceback, and please report it.",
            file=sys.stderr,
        )
        return 1
    print(f"Report written to {out} ({time.time() - start:.1f} s)")
    return 0


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else text[:597] + "..."


if __name__ == "__main__":
    raise SystemExit(main())
