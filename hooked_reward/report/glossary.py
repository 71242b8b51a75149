"""Readable names and one-line definitions for what reports show: table columns, compare metrics and hook names.

Reports keep the analyses' own keys in `report.json` (`coverage_low`, `behaviour.pearson`,
`blocks.0.hook_mlp_out:zero`); the page shows them through `column_label` / `column_help` (a table's header and
its hover text, and the "What the columns mean" list under the table) and `readable` (a cell naming a hook point).
One home for the words, so every report names a statistic the same way.
"""

from __future__ import annotations

import re

__all__ = ["COLUMNS", "METRICS", "column_help", "column_label", "metric_help", "metric_label", "readable"]

#: Table columns: raw key -> (header, one-line definition).
COLUMNS: dict[str, tuple[str, str]] = {
    # distortion index
    "dimension": ("dimension", "the group of pairs (a preference the model should have)"),
    "n_pairs": ("pairs", "number of pairs used"),
    "mean_margin": ("mean margin", "mean of r(chosen) − r(rejected) over the pairs"),
    "auc": ("AUC", "share of pairs the reward ranks the right way round (0.5: chance, 1: all)"),
    "coverage": ("coverage", "how much of the preference the reward direction captures (1: all of it)"),
    "coverage_low": ("coverage, CI low", "lower end of the 95% bootstrap interval of the coverage"),
    "coverage_high": ("coverage, CI high", "upper end of the 95% bootstrap interval of the coverage"),
    "distortion": ("distortion", "0: every pair ranked right; 1: chance or worse"),
    "distortion_low": ("distortion, CI low", "lower end of the 95% bootstrap interval of the distortion"),
    "distortion_high": ("distortion, CI high", "upper end of the 95% bootstrap interval of the distortion"),
    "inverted": ("inverted", "yes when the reward prefers the dispreferred side on average"),
    "weight": ("weight", "the dimension's share in the overall distortion"),
    "cos_w_r": ("cosine with W_R", "cosine between this direction and the reward head's direction W_R"),
    "cos_p_value": ("p (cosine)", "chance of a cosine this large for a random direction (permutation null)"),
    "readout": ("read at", "where the direction is read (the final residual at the reward position)"),
    "null_low": ("null, low", "lower end of the cosine's null interval (random directions)"),
    "null_high": ("null, high", "upper end of the cosine's null interval (random directions)"),
    # divergence-aware patching
    "patch": ("component patched", "the component whose output was replaced"),
    "from_layer": ("from layer", "the layer whose output was replaced"),
    "mean_reward_change": ("mean reward change", "mean change of the reward when the component is replaced"),
    "median_divergence": (
        "median divergence",
        "median out-of-distribution score of the patched residual stream (higher: less like real text)",
    ),
    "threshold": ("threshold", "99th percentile of the divergence on held-out clean texts"),
    "frac_flagged": ("share flagged", "share of rows whose divergence exceeds the threshold"),
    "flagged": ("flagged", "yes when most rows exceed the threshold: the patched run is off-distribution"),
    "component": ("component", "the attention layer, MLP or head"),
    "mode": ("replaced by", "what the output was replaced with (zero, mean, resample)"),
    # cascade
    "n_items": ("items", "number of items in the dimension"),
    "failure_rate": ("failure rate", "share of items the reward ranks the wrong way round"),
    "failure_low": ("failure rate, CI low", "lower end of the 95% bootstrap interval of the failure rate"),
    "failure_high": ("failure rate, CI high", "upper end of the 95% bootstrap interval of the failure rate"),
    "std_delta": ("spread of Δ", "standard deviation of the per-item reward difference"),
    "std_delta_low": ("spread of Δ, CI low", "lower end of the 95% bootstrap interval of the spread"),
    "std_delta_high": ("spread of Δ, CI high", "upper end of the 95% bootstrap interval of the spread"),
    "cluster": ("cluster", "dimensions whose failures share components end up in the same cluster"),
    # conflict
    "i": ("term i", "the first reward term"),
    "j": ("term j", "the second reward term"),
    "correlation": ("correlation", "correlation of the two terms' contributions over pairs"),
    "corr_low": ("correlation, CI low", "lower end of the 95% bootstrap interval of the correlation"),
    "corr_high": ("correlation, CI high", "upper end of the 95% bootstrap interval of the correlation"),
    "whitened_cos": ("whitened cosine", "cosine of the two terms' directions in the data's own geometry"),
    "wc_low": ("whitened cosine, CI low", "lower end of the 95% bootstrap interval of the whitened cosine"),
    "wc_high": ("whitened cosine, CI high", "upper end of the 95% bootstrap interval of the whitened cosine"),
    "n_disagree": ("pairs in conflict", "pairs on which the two terms push the reward in opposite directions"),
    "disagree_rate": ("conflict rate", "share of pairs on which the two terms conflict"),
    "i_wins": ("term i wins", "share of conflicting pairs where the reward follows term i"),
    "j_wins": ("term j wins", "share of conflicting pairs where the reward follows term j"),
    # concept vectors
    "concept": ("concept", "the dimension whose direction was fitted"),
    "hook": ("read at", "the hook point the direction was fitted at"),
    "method": ("method", "how the direction was fitted"),
    "typical_norm": ("typical norm", "typical length of the activation the direction is added to"),
    "train_auc": ("AUC (train)", "how well the direction separates the two sides on the fitting pairs"),
    "test_auc": ("AUC (test)", "the same on held-out pairs (0.5: chance, 1: perfect)"),
    "test_auc_low": ("AUC (test), CI low", "lower end of the 95% bootstrap interval of the test AUC"),
    "test_auc_high": ("AUC (test), CI high", "upper end of the 95% bootstrap interval of the test AUC"),
    "n_test_pos": ("test texts (+)", "held-out texts of the preferred side"),
    "n_test_neg": ("test texts (−)", "held-out texts of the dispreferred side"),
    "slope_frozen": ("slope (norm frozen)", "reward change per unit of the direction added, final norm frozen"),
    "predicted_frozen": ("predicted slope", "the slope W_R predicts with the norm frozen (should match)"),
    "slope": ("slope", "reward change per unit of the direction added"),
    "slope_low": ("slope, CI low", "lower end of the 95% bootstrap interval of the slope"),
    "slope_high": ("slope, CI high", "upper end of the 95% bootstrap interval of the slope"),
    # shared
    "CI low": ("CI low", "lower end of the 95% bootstrap interval over pairs"),
    "CI high": ("CI high", "upper end of the 95% bootstrap interval over pairs"),
    "mean ρ per pair": ("mean ρ per pair", "mean over pairs of the Spearman rank correlation of DRA and patching"),
    "pooled ρ": ("pooled ρ", "Spearman correlation of the mean DRA and mean patching effects over pairs"),
    "p (sign-flip)": ("p (sign-flip)", "chance of a mean ρ this far from 0 if DRA and patching were unrelated"),
    "p (Wilcoxon)": ("p (Wilcoxon)", "the same, from the Wilcoxon signed-rank test"),
}

#: `compare` metrics: key -> (name, one-line definition).
METRICS: dict[str, tuple[str, str]] = {
    "behaviour.pearson": ("margins: Pearson r", "linear correlation of the two models' margins over pairs"),
    "behaviour.spearman": ("margins: Spearman ρ", "rank correlation of the two models' margins over pairs"),
    "behaviour.kendall": ("margins: Kendall τ", "another rank correlation of the margins, robust to ties"),
    "behaviour.agreement": ("same preference", "share of pairs on which both models prefer the same side"),
    "behaviour.accuracy_a": ("accuracy of A", "share of pairs on which model A prefers the chosen text"),
    "behaviour.accuracy_b": ("accuracy of B", "share of pairs on which model B prefers the chosen text"),
    "formation.depth_a": (
        "formation depth of A",
        "relative depth (0: embeddings, 1: last layer) where A's margin forms",
    ),
    "formation.depth_b": ("formation depth of B", "the same for model B"),
    "formation.depth_difference": ("formation depth, A − B", "positive: A forms its preference later than B"),
    "mechanism.profile_similarity": (
        "attribution profile similarity",
        "1 − half the L1 distance of where in depth the two models' direct attributions sit (1: the same)",
    ),
    "geometry.cosine_raw": ("reward directions: cosine", "cosine of the two reward directions W_R (same basis only)"),
    "geometry.cosine_whitened": (
        "reward directions: whitened cosine",
        "the same cosine in the residual stream's own geometry (Ledoit-Wolf covariance)",
    ),
    "geometry.cka_final": ("final-layer CKA", "linear CKA of the two models' last residual streams (1: same geometry)"),
}

_HOOK = re.compile(r"^blocks\.(\d+)\.(?:(attn|mlp)\.)?hook_(\w+?)(?::(\w+))?$")
_PARTS = {
    "mlp_out": "MLP output",
    "attn_out": "attention output",
    "resid_pre": "residual stream before",
    "resid_mid": "residual stream after the attention of",
    "resid_post": "residual stream after",
    "z": "attention heads' outputs (z)",
    "pattern": "attention pattern",
}


def column_label(key: str) -> str:
    """A table column's header: its readable name, or the key itself."""
    return COLUMNS.get(key, (key, ""))[0]


def column_help(key: str) -> str:
    """A table column's one-line definition ('' when there is none)."""
    return COLUMNS.get(key, (key, ""))[1]


def metric_label(key: str) -> str:
    """A compare metric's readable name (the key itself when unknown)."""
    return METRICS.get(key, (key, ""))[0]


def metric_help(key: str) -> str:
    """A compare metric's one-line definition ('' when unknown)."""
    return METRICS.get(key, (key, ""))[1]


def readable(value: str) -> str:
    """A hook point as words, e.g. `blocks.0.hook_mlp_out:zero` -> 'layer 0 MLP output (zero)'; anything else as
    given."""
    m = _HOOK.match(value)
    if m is None:
        return value
    layer, _, part, mode = m.groups()
    name = _PARTS.get(part, part.replace("_", " "))
    text = f"{name} layer {layer}" if name.endswith(("before", "after", "of")) else f"layer {layer} {name}"
    return f"{text} ({mode})" if mode else text
