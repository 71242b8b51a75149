"""Reward-hacking probe suite: minimal pairs per factor, effect statistics, localisation.

from hooked_reward.analysis.probes import run_probe_suite
from hooked_reward.report import write_probe_report
result = run_probe_suite(model)            # all built-in factors, 30 pairs each
result.to_frame(); result.plot(); write_probe_report(result, "probe_report/")
"""

from typing import TYPE_CHECKING

from hooked_reward._lazy import lazy_exports

if TYPE_CHECKING:
    from hooked_reward.analysis.probes.generators import (
        FACTS,
        FILLERS,
        Factor,
        ProbePair,
        Slots,
        default_factors,
        load_pairs_jsonl,
        make_pairs,
    )
    from hooked_reward.analysis.probes.localise import FactorLocalisation, localise_pairs
    from hooked_reward.analysis.probes.stats import FactorStats, factor_stats, verdict
    from hooked_reward.analysis.probes.suite import (
        ProbeSuiteResult,
        localise_factor,
        render_and_tokenize,
        render_texts,
        run_probe_suite,
        score_texts,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hooked_reward.analysis.probes.generators": [
            "FACTS",
            "FILLERS",
            "Factor",
            "ProbePair",
            "Slots",
            "default_factors",
            "load_pairs_jsonl",
            "make_pairs",
        ],
        "hooked_reward.analysis.probes.localise": ["FactorLocalisation", "localise_pairs"],
        "hooked_reward.analysis.probes.stats": ["FactorStats", "factor_stats", "verdict"],
        "hooked_reward.analysis.probes.suite": [
            "ProbeSuiteResult",
            "localise_factor",
            "render_and_tokenize",
            "render_texts",
            "run_probe_suite",
            "score_texts",
        ],
    },
)

__all__ = [
    "FACTS",
    "FILLERS",
    "Factor",
    "FactorLocalisation",
    "FactorStats",
    "ProbePair",
    "ProbeSuiteResult",
    "Slots",
    "default_factors",
    "factor_stats",
    "load_pairs_jsonl",
    "localise_factor",
    "localise_pairs",
    "make_pairs",
    "render_and_tokenize",
    "render_texts",
    "run_probe_suite",
    "score_texts",
    "verdict",
]
