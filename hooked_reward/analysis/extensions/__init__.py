"""The five extensions: distortion index, divergence-aware patching, misalignment cascades,
reward-term conflict and concept vectors. Each is absolute (no forced worst), norm-exact (`W_R_eff`, the
final norm's scale frozen per run) and reports uncertainty (bootstrap intervals, permutation or exact nulls).
"""

from typing import TYPE_CHECKING

from hooked_reward._lazy import lazy_exports

if TYPE_CHECKING:
    from hooked_reward.analysis.extensions.cascade import (
        DIMENSIONS,
        CascadeResult,
        cascade_analysis,
        cascade_from_items,
        misalignment_pairs,
    )
    from hooked_reward.analysis.extensions.concepts import ConceptVector, DoseResponse, dose_response, fit_concept
    from hooked_reward.analysis.extensions.conflict import ConflictResult, conflict_analysis, whitened_cosine
    from hooked_reward.analysis.extensions.distortion import (
        DistortionResult,
        dimensions_from_tagged,
        distortion_from_margins,
        distortion_index,
    )
    from hooked_reward.analysis.extensions.divergence import (
        DivergenceResult,
        GaussianDensity,
        ResidualDensity,
        ablation_hooks,
        ablation_sweep,
        fit_residual_density,
        score_patched_runs,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hooked_reward.analysis.extensions.cascade": [
            "DIMENSIONS",
            "CascadeResult",
            "cascade_analysis",
            "cascade_from_items",
            "misalignment_pairs",
        ],
        "hooked_reward.analysis.extensions.concepts": ["ConceptVector", "DoseResponse", "dose_response", "fit_concept"],
        "hooked_reward.analysis.extensions.conflict": ["ConflictResult", "conflict_analysis", "whitened_cosine"],
        "hooked_reward.analysis.extensions.distortion": [
            "DistortionResult",
            "dimensions_from_tagged",
            "distortion_from_margins",
            "distortion_index",
        ],
        "hooked_reward.analysis.extensions.divergence": [
            "DivergenceResult",
            "GaussianDensity",
            "ResidualDensity",
            "ablation_hooks",
            "ablation_sweep",
            "fit_residual_density",
            "score_patched_runs",
        ],
    },
)

__all__ = [
    "ConceptVector",
    "DoseResponse",
    "dose_response",
    "fit_concept",
    "ConflictResult",
    "conflict_analysis",
    "whitened_cosine",
    "DIMENSIONS",
    "CascadeResult",
    "cascade_analysis",
    "cascade_from_items",
    "misalignment_pairs",
    "DistortionResult",
    "dimensions_from_tagged",
    "distortion_from_margins",
    "distortion_index",
    "DivergenceResult",
    "GaussianDensity",
    "ResidualDensity",
    "ablation_hooks",
    "ablation_sweep",
    "fit_residual_density",
    "score_patched_runs",
]
