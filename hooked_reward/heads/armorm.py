"""ArmoRM's multi-objective gated head (`LlamaForRewardModelWithGating`), as hookable nodes.

What the published model computes (RLHFlow/ArmoRM-Llama3-8B-v0.1, `modeling_custom.py`), and what we hook:

    final-normed residual h [batch, pos, d_model]  (Llama's `model.norm` output)
      ├─ at the reward position (last attended token) ─▶ hook_reward_resid
      │     regression_layer (Linear d_model -> K, no bias)         ─▶ objectives.hook_rewards      r [batch, K]
      │     r @ reward_transform_matrix (T [K, K])                  ─▶ objectives.hook_transformed  r T
      └─ at the gating position (prompt end)                        ─▶ gating.hook_prompt_resid    [batch, d_model]
            gating.layers[0..n_hidden-1]: Linear + ReLU; gating.layers[n_hidden]: Linear -> K
                                                                    ─▶ gating.hook_logits          z [batch, K]
            softmax(z / gating_temperature) * gating.logit_scale    ─▶ gating.hook_weights         g [batch, K]
    score = sum_k g_k (r T)_k                                       ─▶ hook_score ─▶ hook_reward   [batch]

The model's output (`hook_reward`) is the final score, `[batch]`, as ArmoRM's `logits`. Per-objective rewards are
in the hooks above and in `armorm_outputs(model, ...)`. The objectives live on `model.head.objective_names`.

`W_R` is `regression_layer.weight`, one row per objective (`[K, d_model]`, rows named by `head.objective_names`,
`b_R` zeros): the head is affine per objective, not for the score. `cache.reward_attrs(stack)` gives per-objective
attributions `[components, batch, K]`; `cache.reward_attrs(stack, output="score")` attributes the score with the
gate held at this run's weights: each row's direction is `sum_k g_k (T^T W)_k = (T g) @ W`, so attributions of a
full decomposition sum to the score exactly. What the gate itself contributes when two texts are compared is a
separate term: `score_difference(cache_a, cache_b)`.

The gating position: ArmoRM searches each row for the *last* occurrence of a token pattern (Llama-3's
`<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n`, ids 128009 128006 78191 128007 271) and reads the
pattern's *first* token (the `<|eot_id|>` that ends the user turn). Here the pattern, the token of it that is read
(`gating_offset`), and what happens when a row lacks it (`on_missing`: "raise", as ArmoRM does, or "reward_pos",
which reads the gate at the reward position) are settings of the head; `head.gating_at(positions)` fixes explicit
positions per row for other templates.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from hooked_reward.errors import CheckpointError, InputError
from hooked_reward.heads.base import HeadInputs, HeadTerms, PairSplit, Readout, RewardHead, as_float
from hooked_reward.hf_load import check_finite_weights, execution_device, load_hf_model
from hooked_reward.positions import BeforeFirstPadRule, PositionRule
from hooked_reward.registry import CheckpointContents, LoadedCheckpoint, register_layout

if TYPE_CHECKING:
    from hooked_reward.cache import RewardActivationCache
    from hooked_reward.model import HookedRewardModel

ARCHITECTURE = "LlamaForRewardModelWithGating"
LLAMA3_GATING_PATTERN: tuple[int, ...] = (128009, 128006, 78191, 128007, 271)
# The published defaults of `modeling_custom.py` (used there when config.json omits the field).
DEFAULT_GATING_TEMPERATURE = 10.0
# The 19 objectives of ArmoRM-Llama3-8B-v0.1, in output order, from its model card.
ARMORM_V01_OBJECTIVES = [
    "helpsteer-helpfulness",
    "helpsteer-correctness",
    "helpsteer-coherence",
    "helpsteer-complexity",
    "helpsteer-verbosity",
    "ultrafeedback-overall_score",
    "ultrafeedback-instruction_following",
    "ultrafeedback-truthfulness",
    "ultrafeedback-honesty",
    "ultrafeedback-helpfulness",
    "beavertails-is_safe",
    "prometheus-score",
    "argilla-overall_quality",
    "argilla-judge_lm",
    "code-complexity",
    "code-style",
    "code-explanation",
    "code-instruction-following",
    "code-readability",
]
OnMissing = Literal["raise", "reward_pos"]


# ---------------------------------------------------------------------------------------------- the HF-side modules
class GatingNetwork(nn.Module):
    """ArmoRM's gate, with its parameter names (`layers.{i}.weight/bias`, `logit_scale`).

    `n_hidden` Linear+ReLU layers of width `hidden_dim`, then a Linear to `n_objectives`; the weights are
    `softmax(logits / temperature) * logit_scale`. Holds no hooks: `ArmoRMHead` runs it step by step.
    """

    def __init__(
        self, d_model: int, n_objectives: int, hidden_dim: int, n_hidden: int, temperature: float, bias: bool = True
    ) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.logit_scale = nn.Parameter(torch.ones(1))
        dims = [d_model] + [hidden_dim] * n_hidden
        layers = [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        layers.append(nn.Linear(dims[-1], n_objectives, bias=bias))
        self.layers = nn.ModuleList(layers)

    def logits(self, x: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch n_obj"]:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)

    def weights(self, logits: Float[Tensor, "batch n_obj"]) -> Float[Tensor, "batch n_obj"]:
        return F.softmax(logits / self.temperature, dim=-1) * self.logit_scale[0]


class ArmoRMCheckpointModule(nn.Module):
    """The checkpoint's module tree under its own names: `model` (LlamaModel), `regression_layer`, `gating`,
    `reward_transform_matrix`. The bridge wraps `model`; the head reads the rest."""

    base_model_prefix = "model"

    def __init__(
        self,
        backbone: nn.Module,
        config: Any,
        n_objectives: int,
        hidden_dim: int,
        n_hidden: int,
        temperature: float,
        gate_bias: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.model = backbone
        d_model = config.hidden_size
        self.regression_layer = nn.Linear(d_model, n_objectives, bias=False)
        self.gating = GatingNetwork(d_model, n_objectives, hidden_dim, n_hidden, temperature, bias=gate_bias)
        self.reward_transform_matrix = nn.Parameter(torch.eye(n_objectives), requires_grad=False)


# ---------------------------------------------------------------------------------------------- the head
class _GatingHooks(nn.Module):
    """The gate's hook points (`gating.hook_*` in the model's hook graph); no parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_prompt_resid = HookPoint()
        self.hook_logits = HookPoint()
        self.hook_weights = HookPoint()


class _ObjectiveHooks(nn.Module):
    """The objectives' hook points (`objectives.hook_*`); no parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_rewards = HookPoint()
        self.hook_transformed = HookPoint()


class ArmoRMHead(RewardHead):
    """score = sum_k gate_k(prompt-end resid) * (regression(reward resid) @ T)_k, every step hooked.

    Hook points (top-level names in the model's hook graph): `gating.hook_prompt_resid`, `gating.hook_logits`,
    `gating.hook_weights`, `objectives.hook_rewards`, `objectives.hook_transformed`, `hook_score`.
    `output_names == ["score"]` (what the model returns); `objective_names` name the rows of `W_R`.
    """

    supports_weight_processing = False  # the gate reads ln_final's output too: folding it into W_R would change it
    _ckpt: ArmoRMCheckpointModule  # set with object.__setattr__: the bridge's original_model owns it
    gating: _GatingHooks
    objectives: _ObjectiveHooks

    def __init__(
        self,
        checkpoint: ArmoRMCheckpointModule,
        objective_names: Sequence[str] | None = None,
        gating_pattern: Sequence[int] = LLAMA3_GATING_PATTERN,
        gating_offset: int = 0,
        on_missing: OnMissing = "raise",
    ) -> None:
        super().__init__()
        object.__setattr__(self, "_ckpt", checkpoint)  # owned by the bridge's original_model; not re-registered
        k = checkpoint.regression_layer.out_features
        self.objective_names = list(objective_names) if objective_names else [f"objective_{i}" for i in range(k)]
        if len(self.objective_names) != k:
            raise CheckpointError(f"{len(self.objective_names)} objective names for {k} objectives.")
        self.output_names = ["score"]
        self.gating_pattern = tuple(int(t) for t in gating_pattern)
        self.gating_offset = gating_offset
        self.on_missing = on_missing
        self._explicit_positions: Tensor | None = None
        self.gating = _GatingHooks()
        self.objectives = _ObjectiveHooks()
        self.hook_score = HookPoint()

    # -------------------------------------------------------------- weights
    @property
    def n_objectives(self) -> int:
        return len(self.objective_names)

    @property
    def regression_layer(self) -> nn.Linear:
        return self._ckpt.regression_layer

    @property
    def gating_network(self) -> GatingNetwork:
        return self._ckpt.gating

    @property
    def transform(self) -> Float[Tensor, "n_obj n_obj"]:
        """`reward_transform_matrix` T: transformed rewards are `rewards @ T`."""
        return self._ckpt.reward_transform_matrix

    def linear_map(self) -> tuple[Float[Tensor, "n_obj d_model"], Float[Tensor, " n_obj"]]:
        """Per-objective rewards are `reward_resid @ W.T` (no bias): `W` = `regression_layer.weight`."""
        weight = self.regression_layer.weight
        return weight, torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)

    def score_directions(self, gate_weights: Float[Tensor, "batch n_obj"]) -> Float[Tensor, "batch d_model"]:
        """Each row's score direction with the gate held at `gate_weights`: `(T g) @ W` (in ln_final's output basis).

        score = reward_resid · direction exactly, since score = sum_k g_k sum_j r_j T_jk = sum_j r_j (T g)_j.
        """
        w = as_float(self.regression_layer.weight)
        t = as_float(self.transform)
        return (gate_weights.to(w.device, torch.float32) @ t.T) @ w

    # -------------------------------------------------------------- readout
    readout_kind = "gate_fixed"

    def readout_names(self) -> list[str]:
        """The objectives (`W_R` rows), then "score"."""
        return list(self.objective_names) + ["score"]

    def readout_hooks(self) -> list[str]:
        return ["gating.hook_weights", "objectives.hook_rewards", "objectives.hook_transformed"]

    def readout(self, cache: RewardActivationCache | None = None, *, normed: Tensor | None = None) -> Readout:  # noqa: ARG002 (the RewardHead interface's signature)
        """One column per objective (its `W_R` row, no offset) and "score" along `score_directions(g)`, the gate
        `g` held at the run's weights (`cache["gating.hook_weights"]`): `[batch, K + 1, d_model]`."""
        if cache is None or "gating.hook_weights" not in cache.cache_dict:
            raise InputError(
                "ArmoRM readouts hold the gate at this run's weights, so the cache needs "
                "'gating.hook_weights'; include it in names_filter."
            )
        g = cache["gating.hook_weights"].to(torch.float32)
        w = as_float(self.regression_layer.weight).to(g.device)  # [K, d]
        score = self.score_directions(g).to(g.device)  # [b, d]
        direction = torch.cat([w.expand(g.shape[0], *w.shape), score[:, None]], dim=1)
        return Readout(
            direction, torch.zeros(direction.shape[:-1], device=g.device), self.readout_names(), "gate_fixed"
        )

    def transform_objectives(self, per_objective: Float[Tensor, "n_obj ..."]) -> Float[Tensor, "n_obj ..."]:
        """`Tᵀ x`: per-objective quantities (e.g. directions `[K, d_model]`) as the transformed objectives
        `r T` read them (transformed objective k = Σ_j T_jk r_j), in `per_objective`'s dtype and device."""
        t = as_float(self.transform).to(per_objective.device, per_objective.dtype)
        return t.T @ per_objective

    def mean_gate_weights(
        self, gate_a: Float[Tensor, "batch n_obj"], gate_b: Float[Tensor, "batch n_obj"]
    ) -> Float[Tensor, "batch n_obj"]:
        """`T ḡ`, ḡ the two runs' mean gate: the weight of each objective's change in `score_difference`'s
        objectives term (Δscore = Σ_j (T ḡ)_j Δr_j + the gate's own term)."""
        g_mean = (gate_a + gate_b) / 2
        return g_mean @ as_float(self.transform).to(g_mean.device).T

    def readout_column(self, output: int | None) -> int | None:  # noqa: ARG002 (one output: the score)
        """The score's column (after the objectives): the lens and DRA of the model's one output."""
        return self.readout_names().index("score")

    # -------------------------------------------------------------- pairs and terms
    def pair_split_hooks(self) -> list[str]:
        return ["gating.hook_weights", "objectives.hook_transformed"]

    def pair_split(self, cache_a: RewardActivationCache, cache_b: RewardActivationCache) -> PairSplit:
        """Objective columns: their plain differences. Score column: `T ḡ` (ḡ the two runs' mean gate) times each
        objective's difference, plus the gate's own term `Σ_k Δg_k t̄_k` as the row "gate" (`score_difference`'s
        exact split: the rows then sum to Δscore)."""
        split = score_difference(cache_a, cache_b)
        k = self.n_objectives
        gate_a, gate_b = cache_a["gating.hook_weights"].float(), cache_b["gating.hook_weights"].float()
        mean_gate = self.mean_gate_weights(gate_a, gate_b)
        batch = mean_gate.shape[0]
        weights = torch.zeros(batch, k + 1, k + 1, device=mean_gate.device)
        weights[:, :k, :k] = torch.eye(k, device=mean_gate.device)
        weights[:, k, :k] = mean_gate
        own = torch.zeros(batch, k + 1, device=split.gate.device)
        own[:, k] = split.gate.sum(-1)
        return PairSplit(weights, own, "gate", {"objectives": split.objectives, "gate": split.gate})

    def term_names(self) -> list[str]:
        return list(self.objective_names)

    def term_hooks(self) -> list[str]:
        return ["objectives.hook_rewards", "objectives.hook_transformed", "gating.hook_weights"]

    def terms(self, cache: RewardActivationCache, *, transformed: bool = True) -> HeadTerms:
        """The objectives (transformed `r T`, what the gate combines, or the raw `r`) and the gate's weights."""
        values = cache["objectives.hook_transformed" if transformed else "objectives.hook_rewards"]
        return HeadTerms(self.term_names(), values, cache["gating.hook_weights"])

    def term_directions(
        self, directions: Float[Tensor, "n_obj d_model"], transformed: bool = True
    ) -> Float[Tensor, "n_obj d_model"]:
        """`Tᵀ directions` for the transformed objectives (what they read), else `directions`."""
        return self.transform_objectives(directions) if transformed else directions

    def readout_values(self, cache: RewardActivationCache, rewards: Tensor) -> Float[Tensor, "batch n_cols"]:
        """`[objectives.hook_rewards, score]` per row."""
        rewards = rewards.to(torch.float32).reshape(rewards.shape[0], -1)
        objectives = cache["objectives.hook_rewards"].to(rewards.device, torch.float32)
        return torch.cat([objectives, rewards], dim=-1)

    # -------------------------------------------------------------- the gating position
    def gating_positions(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"],
        reward_pos: Tensor | None = None,
    ) -> Int[Tensor, " batch"]:
        """Where each row's gate reads: explicit positions if set, else the last occurrence of `gating_pattern`
        among attended tokens, at `gating_offset` within it (ArmoRM: 0, the pattern's first token).

        A row without the pattern raises `InputError` (`on_missing="raise"`, ArmoRM's behaviour) or reads the
        gate at the reward position (`on_missing="reward_pos"`).
        """
        batch, seq = tokens.shape
        if self._explicit_positions is not None:
            pos = self._explicit_positions.to(tokens.device).long()
            if pos.shape != (batch,):
                raise InputError(
                    f"Explicit gating positions have shape {tuple(pos.shape)}; this batch needs ({batch},)."
                )
            pos = pos % seq
            if not bool(attention_mask.gather(1, pos[:, None]).bool().all()):
                raise InputError(f"Explicit gating positions {pos.tolist()} include padding positions.")
            return pos
        pattern = torch.tensor(self.gating_pattern, device=tokens.device)
        n = len(self.gating_pattern)
        if not -n <= self.gating_offset < n:
            raise InputError(f"gating_offset {self.gating_offset} lies outside the {n}-token gating pattern.")
        found = torch.full((batch,), -1, dtype=torch.long, device=tokens.device)
        if seq >= n:
            windows = tokens.unfold(1, n, 1)  # [batch, seq - n + 1, n]
            attended = attention_mask.bool().unfold(1, n, 1).all(-1)
            match = (windows == pattern).all(-1) & attended
            starts = torch.arange(match.shape[1], device=tokens.device).expand_as(match)
            found = torch.where(match, starts, -1).amax(-1)
        missing = found < 0
        if bool(missing.any()):
            rows = missing.nonzero().flatten().tolist()
            if self.on_missing == "reward_pos" and reward_pos is not None:
                return torch.where(missing, reward_pos.to(found.device), found + self.gating_offset % n)
            raise InputError(
                f"Row(s) {rows} do not contain the gating token pattern {list(self.gating_pattern)}, so ArmoRM's "
                "gate has no prompt-end token to read. Render the text with the model's chat template, set "
                "`model.head.gating_pattern` for another template, pass explicit positions with "
                "`with model.head.gating_at(positions): ...`, or opt in to `model.head.on_missing = 'reward_pos'`."
            )
        return found + self.gating_offset % n

    @contextmanager
    def gating_at(self, positions: Int[Tensor, " batch"] | Sequence[int]) -> Iterator[None]:
        """Read the gate at these positions (one per row, in the padded batch) for runs inside the block."""
        previous = self._explicit_positions
        self._explicit_positions = torch.as_tensor(positions).long()
        try:
            yield
        finally:
            self._explicit_positions = previous

    # -------------------------------------------------------------- forward
    def forward(self, reward_resid: Float[Tensor, "batch d_model"], inputs: HeadInputs) -> Float[Tensor, " batch"]:
        ckpt = self._ckpt
        dtype = ckpt.regression_layer.weight.dtype
        rewards = self.objectives.hook_rewards(ckpt.regression_layer(reward_resid.to(dtype)))
        transformed = self.objectives.hook_transformed(rewards @ self.transform.to(rewards.dtype))
        gate_pos = self.gating_positions(inputs.tokens, inputs.attention_mask, inputs.reward_pos)
        rows = torch.arange(inputs.final_resid.shape[0], device=inputs.final_resid.device)
        prompt_resid = self.gating.hook_prompt_resid(inputs.final_resid[rows, gate_pos.to(rows.device)].to(dtype))
        logits = self.gating.hook_logits(ckpt.gating.logits(prompt_resid))
        weights = self.gating.hook_weights(ckpt.gating.weights(logits))
        return self.hook_score((weights * transformed).sum(-1))

    def hook_points(self) -> dict[str, HookPoint]:
        return {
            "gating.hook_prompt_resid": self.gating.hook_prompt_resid,
            "gating.hook_logits": self.gating.hook_logits,
            "gating.hook_weights": self.gating.hook_weights,
            "objectives.hook_rewards": self.objectives.hook_rewards,
            "objectives.hook_transformed": self.objectives.hook_transformed,
            "hook_score": self.hook_score,
        }

    def extra_repr(self) -> str:
        return (
            f"objectives={self.n_objectives}, temperature={self.gating_network.temperature}, "
            f"gating_pattern={list(self.gating_pattern)}, gating_offset={self.gating_offset}, "
            f"on_missing={self.on_missing!r}"
        )


# ---------------------------------------------------------------------------------------------- analysis helpers
ARMORM_HOOKS = (
    "objectives.hook_rewards",
    "objectives.hook_transformed",
    "gating.hook_logits",
    "gating.hook_weights",
    "hook_score",
)


@dataclass
class ArmoRMOutputs:
    """Everything the head computed for one batch (`[batch]` or `[batch, n_objectives]`)."""

    score: Float[Tensor, " batch"]
    rewards: Float[Tensor, "batch n_obj"]
    transformed: Float[Tensor, "batch n_obj"]
    gate_logits: Float[Tensor, "batch n_obj"]
    gate_weights: Float[Tensor, "batch n_obj"]
    gating_pos: Int[Tensor, " batch"]
    objective_names: list[str]


def _armorm_head(model: HookedRewardModel) -> ArmoRMHead:
    head = getattr(model, "head", None)
    if not isinstance(head, ArmoRMHead):
        raise InputError(f"This model's head is {type(head).__name__}, not an ArmoRM head.")
    return head


def armorm_outputs(model: HookedRewardModel, input: Any, *, attention_mask: Tensor | None = None) -> ArmoRMOutputs:
    """Run an ArmoRM model and return its score, per-objective rewards (raw and transformed) and gate."""
    head = _armorm_head(model)
    tokens, mask = model.prepare(input, attention_mask=attention_mask)
    with torch.no_grad():
        score, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=list(ARMORM_HOOKS))
    return ArmoRMOutputs(
        score=score,
        rewards=cache["objectives.hook_rewards"],
        transformed=cache["objectives.hook_transformed"],
        gate_logits=cache["gating.hook_logits"],
        gate_weights=cache["gating.hook_weights"],
        gating_pos=head.gating_positions(tokens, mask, model.reward_positions(mask, tokens)),
        objective_names=list(head.objective_names),
    )


@dataclass
class ScoreDifference:
    """score_a - score_b = objectives.sum(-1) + gate.sum(-1), exactly.

    `objectives[:, k]` = mean gate weight_k x change in transformed reward_k (what the responses changed, the gate
    held at the two runs' mean); `gate[:, k]` = change in gate weight_k x mean transformed reward_k (what the
    prompt's routing changed). The symmetric split (means of a and b) makes both terms independent of order.
    """

    objectives: Float[Tensor, "batch n_obj"]
    gate: Float[Tensor, "batch n_obj"]
    total: Float[Tensor, " batch"]
    objective_names: list[str]


def score_difference(cache_a: RewardActivationCache, cache_b: RewardActivationCache) -> ScoreDifference:
    """Split score(a) - score(b) into the objectives' term and the gate's own term (see `ScoreDifference`).

    Both caches need `gating.hook_weights` and `objectives.hook_transformed`. With the same prompt (a causal
    model's gate sees only the prompt) the gate term is zero.
    """
    for name in ("gating.hook_weights", "objectives.hook_transformed"):
        for cache in (cache_a, cache_b):
            if name not in cache.cache_dict:
                raise InputError(f"score_difference needs {name!r} in both caches; include it in names_filter.")
    g_a, g_b = cache_a["gating.hook_weights"].float(), cache_b["gating.hook_weights"].float()
    t_a, t_b = cache_a["objectives.hook_transformed"].float(), cache_b["objectives.hook_transformed"].float()
    if g_a.shape != g_b.shape:
        raise InputError(f"The two caches hold different batches: {tuple(g_a.shape)} vs {tuple(g_b.shape)}.")
    objectives = (g_a + g_b) / 2 * (t_a - t_b)
    gate = (g_a - g_b) * (t_a + t_b) / 2
    names = list(_armorm_head(cache_a.model).objective_names)
    return ScoreDifference(objectives, gate, (g_a * t_a).sum(-1) - (g_b * t_b).sum(-1), names)


# ---------------------------------------------------------------------------------------------- the loader
def _safetensor_keys_and_reader(path: Path) -> tuple[set[str], Any]:
    """Every tensor name in the checkpoint and a `get(name) -> Tensor` for it (single or sharded safetensors)."""
    from safetensors import safe_open

    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.exists():
        files = {single}
        where = None
    elif index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {path / f for f in set(weight_map.values())}
        where = {k: path / f for k, f in weight_map.items()}
    else:
        raise CheckpointError(
            f"{str(path)!r} has no model.safetensors (or its index); ArmoRM checkpoints are read from safetensors."
        )
    keys: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 (safetensors handle: keys() is its API, no __iter__)
                keys[k] = file
    if where is not None:
        keys.update(where)

    def get(name: str) -> Tensor:
        with safe_open(str(keys[name]), framework="pt") as f:
            return f.get_tensor(name)

    return set(keys), get


def _objective_names(config: dict, k: int) -> list[str] | None:
    names = config.get("objective_names")
    if names is not None:
        if len(names) != k:
            raise CheckpointError(f"config.json objective_names has {len(names)} entries for num_objectives={k}.")
        return [str(n) for n in names]
    id2label = config.get("id2label") or {}
    if len(id2label) == k and not all(str(v).startswith("LABEL_") for v in id2label.values()):
        return [str(id2label.get(str(i), id2label.get(i))) for i in range(k)]
    if k == len(ARMORM_V01_OBJECTIVES):
        return list(ARMORM_V01_OBJECTIVES)  # ArmoRM-Llama3-8B-v0.1's config carries no names; its card lists them
    return None


def _is_armorm(contents: CheckpointContents) -> bool:
    return ARCHITECTURE in contents.architectures


@register_layout(
    "armorm", f"config.json architectures lists {ARCHITECTURE} (ArmoRM's gated head)", _is_armorm, priority=20
)
def load_armorm(path: Path, dtype: torch.dtype = torch.float32, **hf_kwargs: Any) -> LoadedCheckpoint:
    """Load an ArmoRM (`LlamaForRewardModelWithGating`) directory without running its code.

    config.json: `num_objectives` (required), `gating_temperature` (default 10, as ArmoRM), `gating_hidden_dim`
    and `gating_n_hidden` (read from the tensors when absent; an error if they disagree), optional
    `objective_names` (else `id2label`, else ArmoRM-v0.1's 19 published names when there are 19), optional
    `gating_token_pattern` (default Llama-3's) and `gating_token_offset` (default 0).
    Tensors: `model.*`, `regression_layer.weight`, `gating.layers.{i}.weight/bias`, `gating.logit_scale`,
    `reward_transform_matrix`.
    """
    from transformers import AutoConfig, LlamaModel

    config = json.loads((path / "config.json").read_text())
    if "num_objectives" not in config:
        raise CheckpointError(f"{str(path)!r}: config.json lacks 'num_objectives', which ArmoRM's head needs.")
    k = int(config["num_objectives"])
    keys, get = _safetensor_keys_and_reader(path)
    required = ["regression_layer.weight", "gating.logit_scale", "reward_transform_matrix"]
    for name in required:
        if name not in keys:
            raise CheckpointError(f"{str(path)!r}: tensor {name!r} is missing from the checkpoint.")
    layer_ids = sorted({int(key.split(".")[2]) for key in keys if key.startswith("gating.layers.")})
    if not layer_ids or layer_ids != list(range(len(layer_ids))):
        raise CheckpointError(f"{str(path)!r}: gating.layers.N tensors are missing or not numbered 0..N ({layer_ids}).")
    for i in layer_ids:
        if f"gating.layers.{i}.weight" not in keys:
            raise CheckpointError(f"{str(path)!r}: tensor 'gating.layers.{i}.weight' is missing from the checkpoint.")
    n_hidden = len(layer_ids) - 1
    hidden_dim = get("gating.layers.0.weight").shape[0] if n_hidden else 0
    checks = [("gating_n_hidden", n_hidden)] + ([("gating_hidden_dim", hidden_dim)] if n_hidden else [])
    for field, found in checks:
        if field in config and int(config[field]) != found:
            raise CheckpointError(
                f"{str(path)!r}: config.json {field}={config[field]} but the gating tensors give {found}."
            )

    hf_config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    d_model = hf_config.hidden_size
    reg = get("regression_layer.weight")
    if tuple(reg.shape) != (k, d_model):
        raise CheckpointError(
            f"{str(path)!r}: regression_layer.weight has shape {tuple(reg.shape)}; expected (num_objectives={k}, "
            f"hidden_size={d_model})."
        )
    transform = get("reward_transform_matrix")
    if tuple(transform.shape) != (k, k):
        raise CheckpointError(
            f"{str(path)!r}: reward_transform_matrix has shape {tuple(transform.shape)}; expected ({k}, {k}) "
            f"for num_objectives={k}."
        )
    last = get(f"gating.layers.{n_hidden}.weight")
    if last.shape[0] != k:
        raise CheckpointError(
            f"{str(path)!r}: the gate's last layer gating.layers.{n_hidden} outputs {last.shape[0]} weights for "
            f"num_objectives={k}."
        )
    temperature = float(config.get("gating_temperature", DEFAULT_GATING_TEMPERATURE))
    head_prefixes = ("regression_layer.", "gating.", "reward_transform_matrix", "lm_head.")
    backbone = load_hf_model(LlamaModel, path, consumed=head_prefixes, config=hf_config, dtype=dtype, **hf_kwargs)
    gate_bias = f"gating.layers.{n_hidden}.bias" in keys
    module = ArmoRMCheckpointModule(backbone, hf_config, k, hidden_dim, n_hidden, temperature, gate_bias)
    head_state = {name: get(name) for name in keys if not name.startswith("model.")}
    head_state.pop("lm_head.weight", None)
    expected = {n for n, _ in module.named_parameters() if not n.startswith("model.")}
    missing = sorted(expected - set(head_state))
    if missing:
        raise CheckpointError(f"{str(path)!r}: tensor(s) {missing} are missing from the checkpoint.")
    unexpected = sorted(set(head_state) - expected)
    if unexpected:
        raise CheckpointError(f"{str(path)!r}: unexpected head tensor(s) {unexpected} for an ArmoRM checkpoint.")
    try:
        module.load_state_dict(head_state, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{str(path)!r}: a gating tensor has the wrong shape: {err}") from err
    check_finite_weights(module, path)
    device = execution_device(backbone)
    for name in ("regression_layer", "gating"):
        getattr(module, name).to(device=device, dtype=dtype)
    module.reward_transform_matrix.data = module.reward_transform_matrix.data.to(device=device, dtype=dtype)
    module.eval()
    names = _objective_names(config, k)
    pattern = config.get("gating_token_pattern", LLAMA3_GATING_PATTERN)
    offset = int(config.get("gating_token_offset", 0))

    def make_head(_bridge: HookedRewardModel) -> RewardHead:
        return ArmoRMHead(module, names, gating_pattern=pattern, gating_offset=offset)

    def position_rule(_bridge: HookedRewardModel) -> PositionRule:
        return BeforeFirstPadRule(getattr(hf_config, "pad_token_id", None), "ArmoRM's modeling_custom.py")

    return LoadedCheckpoint(module, hf_config, "LlamaForCausalLM", None, make_head, position_rule=position_rule)
