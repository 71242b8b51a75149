"""Sparse autoencoders on the reward axis: load (SAE-Lens, sparsify), train (TopK), splice, attribute.

See ``docs/tools/sae.md`` for a worked example.
"""

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
