"""The ArmoRM-style organism: a tiny multi-objective gated reward model (see `card.md`).

Files: `weights/` (ArmoRM layout, loads with `HookedRewardModel.from_pretrained`), `heldout.jsonl`, `card.json`,
`card.md`; `train.py` regenerates them (`python -m hooked_reward.organisms.armorm.train`).
"""

from pathlib import Path

ARMORM_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = ARMORM_DIR / "weights"
