"""Analyses on the reward axis, one module per family.

Observational: `lens` (reward lens), `attribution` (direct reward attribution). Causal: `patching`,
`path_patching`, `attribution_patching`, `circuits` (edge attribution and edge patching), `faithfulness` (DRA vs
patching), `necessity` (what a component restores beside what it removes), `grouping` (unlabelled pairs by their
dominant component). Also `probes` (reward-hacking probe suite), `compare` (two models), `stats` (shared
statistics) and `extensions/` (the five extensions).
Import the module you need, e.g. `from hooked_reward.analysis.lens import reward_lens`.
"""
