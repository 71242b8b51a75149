"""Sparse autoencoders on the reward axis: load (SAE-Lens, sparsify), train (TopK), splice, attribute.

See ``docs/tools/sae.md`` for a worked example.
"""

from typing import TYPE_CHECKING

from hooked_reward._lazy import lazy_exports

if TYPE_CHECKING:
    from hooked_reward.sae.attribution import (
        CausalCheck,
        FeatureAttribution,
        ablate_features,
        attribute_features,
        attribute_pairs,
        check_attribution,
        linear_path,
        patch_features,
        reward_axis_weights,
    )
    from hooked_reward.sae.autoencoder import SAEConfig, SparseAutoencoder
    from hooked_reward.sae.formats import (
        SAEFormatError,
        detect_format,
        from_sae_lens,
        load_sae,
        load_sae_lens,
        load_sparsify,
        save_sae,
    )
    from hooked_reward.sae.splice import (
        SpliceReport,
        check_sae_fits_model,
        run_with_cache_with_sae,
        run_with_sae,
        splice_report,
        splice_sae,
    )
    from hooked_reward.sae.train import TrainingLog, collect_activations, train_topk_sae, train_topk_sae_on_activations

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "hooked_reward.sae.attribution": [
            "CausalCheck",
            "FeatureAttribution",
            "ablate_features",
            "attribute_features",
            "attribute_pairs",
            "check_attribution",
            "linear_path",
            "patch_features",
            "reward_axis_weights",
        ],
        "hooked_reward.sae.autoencoder": ["SAEConfig", "SparseAutoencoder"],
        "hooked_reward.sae.formats": [
            "SAEFormatError",
            "detect_format",
            "from_sae_lens",
            "load_sae",
            "load_sae_lens",
            "load_sparsify",
            "save_sae",
        ],
        "hooked_reward.sae.splice": [
            "SpliceReport",
            "check_sae_fits_model",
            "run_with_cache_with_sae",
            "run_with_sae",
            "splice_report",
            "splice_sae",
        ],
        "hooked_reward.sae.train": [
            "TrainingLog",
            "collect_activations",
            "train_topk_sae",
            "train_topk_sae_on_activations",
        ],
    },
)

__all__ = [
    "CausalCheck",
    "FeatureAttribution",
    "ablate_features",
    "attribute_features",
    "attribute_pairs",
    "check_attribution",
    "linear_path",
    "patch_features",
    "reward_axis_weights",
    "SAEConfig",
    "SAEFormatError",
    "SparseAutoencoder",
    "SpliceReport",
    "TrainingLog",
    "check_sae_fits_model",
    "collect_activations",
    "detect_format",
    "load_sae",
    "load_sae_lens",
    "from_sae_lens",
    "load_sparsify",
    "run_with_cache_with_sae",
    "run_with_sae",
    "save_sae",
    "splice_report",
    "splice_sae",
    "train_topk_sae",
    "train_topk_sae_on_activations",
]
