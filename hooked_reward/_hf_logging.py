"""HF's logging as the user set it, and a switch for HF's progress bars.

Imported before TransformerLens's bridge by each module that imports it (`model`, `bridge_build`,
`fused_attention`), so that it runs first however the package is entered (`import hooked_reward` loads neither).

Importing TransformerLens sets the "transformers" logger to ERROR, which would hide HF's own warnings (its load
report among them) from every user of this package. This module imports it once, up front, and restores the
level the user (or transformers' default) had.
"""

from __future__ import annotations

import logging

import transformers  # noqa: F401  (configures the "transformers" logger, so its level is the user's)

_level = logging.getLogger("transformers").level
import transformer_lens.model_bridge.sources.transformers.source  # noqa: E402, F401  (sets it to ERROR)

logging.getLogger("transformers").setLevel(_level)


def disable_hf_progress_bars() -> None:
    """Turn off the progress bars of transformers (weight loading) and huggingface_hub (downloads)."""
    import huggingface_hub.utils
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
