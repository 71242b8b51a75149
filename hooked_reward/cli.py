"""`hooked-reward`: the command-line entry point.

    hooked-reward demo                                  # the bundled organism, no arguments needed
    hooked-reward analyze --model DIR --pairs FILE.jsonl
    hooked-reward probe [--model DIR]
    hooked-reward compare --model DIR --model-b DIR --pairs FILE.jsonl
    hooked-reward faithfulness [--model DIR --pairs FILE.jsonl]
    hooked-reward extensions [--model DIR]

Each writes a report folder (`index.html`, PNG plots, `report.json`) and prints its path.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_ORGANISM = "sycophancy"


def _load_model(model_dir: str | None) -> tuple[Any, Callable[[str, str], str], list[dict] | None]:
    """The model, how its texts are rendered, and its bundled pairs (organisms only)."""
    from hooked_reward import HookedRewardModel, organisms

    if model_dir is None:
        model = organisms.load(DEFAULT_ORGANISM)
        return model, organisms.render, organisms.load_pairs(DEFAULT_ORGANISM)
    for name in organisms.list_organisms():
        if Path(model_dir).resolve() == organisms.checkpoint_dir(name).resolve():
            return organisms.load(name), organisms.render, organisms.load_pairs(name)
    model = HookedRewardModel.from_pretrained(model_dir)
    return model, model.render_chat, None


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
            by_mech.setdefault(p.mechanism, []).append(p)
        per = max(1, args.max_pairs // max(1, len(by_mech)))
        pairs = [p for group in by_mech.values() for p in group[:per]]
    return pairs


def cmd_analyze(args: argparse.Namespace) -> Path:
    from hooked_reward.report.analyze import analyze

    model, render, bundled = _load_model(args.model)
    pairs = _pairs(args, bundled, render)
    title = f"hooked_reward analysis of {args.model or 'the ' + DEFAULT_ORGANISM + ' organism'}"
    return analyze(model, pairs, args.out, title=title, progress=not args.quiet)


def cmd_probe(args: argparse.Namespace) -> Path:
    from hooked_reward import organisms
    from hooked_reward.analysis.probes import run_probe_suite, write_probe_report
    from hooked_reward.analysis.probes.generators import organism_factors

    model, render, bundled = _load_model(args.model)
    kwargs: dict[str, Any] = {}
    if render is organisms.render:  # the organism's word-level vocabulary: its own factor templates
        kwargs = {"factors": organism_factors(), "render": organisms.render}
    result = run_probe_suite(model, n_pairs=args.n_pairs, seed=args.seed, progress=not args.quiet, **kwargs)
    return Path(write_probe_report(result, args.out))


def cmd_compare(args: argparse.Namespace) -> Path:
    from hooked_reward.analysis.compare import compare_models, write_compare_report

    model_a, render, bundled = _load_model(args.model)
    model_b, _, _ = _load_model(args.model_b)
    pairs = _pairs(args, bundled, render)
    records = [{"prompt": "", "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    result = compare_models(model_a, model_b, records, render_a=_identity, render_b=_identity, progress=not args.quiet)
    return Path(write_compare_report(result, args.out))


def _identity(prompt: str, response: str) -> str:
    return response


def cmd_faithfulness(args: argparse.Namespace) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hooked_reward.analysis.faithfulness import faithfulness_study
    from hooked_reward.report.html import Report

    model, render, bundled = _load_model(args.model)
    pairs = _pairs(args, bundled, render)
    report = Report(Path(args.out), "Faithfulness: direct reward attribution vs activation patching")
    report.add_text(
        "What this is",
        "Per pair, the Spearman correlation between each component's direct reward attribution of "
        "r(chosen) − r(rejected) and its denoising patching effect (chosen activations into the rejected run); "
        "pairs of different token lengths are aligned at the reward position (right ends). Over pairs: mean, BCa "
        "bootstrap 95% CI, and sign-flip and Wilcoxon tests against 0.",
    )
    for by in ("component", "head"):
        result = faithfulness_study(
            model, [(p.chosen, p.rejected) for p in pairs], by=by, align="reward", progress=not args.quiet
        )
        report.add_table(f"Summary ({by})", [result.summary()])
        fig, ax = plt.subplots(figsize=(5, 3))
        result.plot(ax=ax)
        report.add_figure(f"Per-pair Spearman ρ ({by})", fig, f"faithfulness_{by}")
        report.add_data(
            by,
            {
                "summary": result.summary(),
                "rho": result.rho,
                "labels": result.components,
                "attribution": result.attribution,
                "patching": result.patching,
            },
        )
    return report.write()


def cmd_extensions(args: argparse.Namespace) -> Path:
    from hooked_reward import organisms
    from hooked_reward.analysis.extensions import write_extensions_report

    model, render, _ = _load_model(args.model)
    kwargs = {"render": organisms.render} if render is organisms.render else {}
    return Path(write_extensions_report(model, args.out, progress=not args.quiet, **kwargs))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooked-reward", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, out: str, pairs: bool = True) -> None:
        p.add_argument("--model", help="checkpoint directory (default: the bundled organism)")
        if pairs:
            p.add_argument("--pairs", help="JSONL of {prompt, chosen, rejected, mechanism} (default: bundled pairs)")
            p.add_argument("--max-pairs", type=int, default=0, help="use at most this many pairs (0: all)")
        p.add_argument("--out", default=out, help=f"report folder (default: {out})")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

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
    from hooked_reward.errors import HookedRewardError

    args = build_parser().parse_args(argv)
    if getattr(args, "max_pairs", None) == 0 and getattr(args, "max_pairs_default", None):
        args.max_pairs = args.max_pairs_default
    start = time.time()
    try:
        out = args.func(args)
    except (HookedRewardError, FileNotFoundError) as err:
        print(f"hooked-reward {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(f"Report written to {out} ({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
