"""`python -m hooked_reward`: the command-line interface (same as `hooked-reward`)."""

from hooked_reward.cli import main

raise SystemExit(main())
