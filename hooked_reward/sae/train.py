"""A small TopK sparse-autoencoder trainer on cached activations of a ``HookedRewardModel``.

Recipe (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", as used by sparsify / SAE-Lens):

- inputs are scaled by one dataset constant ``s = sqrt(d_in) / mean ||x||`` during training so that the
  default learning rate works at any activation scale; ``s`` is folded into the weights at the end, so
  the returned SAE reads and writes raw activations;
- ``b_dec`` starts at the data mean, decoder rows at random unit vectors, ``W_enc = W_dec.T``;
- loss = fraction of variance unexplained (FVU) ``||x - x_hat||^2 / ||x - mean||^2`` plus
  ``auxk_alpha`` x the AuxK loss (dead latents -- none fired for ``dead_after`` training tokens --
  reconstruct the residual), which keeps latents alive;
- Adam; decoder rows are kept unit-norm (gradient parallel to each row removed, rows renormalised).

Defaults: ``d_sae = 8 * d_in``, ``k = 8``, ``steps = 2000``, ``batch_size = 256`` activation vectors,
``lr = 2e-4 / sqrt(d_sae / 2**14)`` (capped at 3e-3), ``auxk_alpha = 1/32``, ``seed = 0``; progress bar on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hooked_reward.model import HookedRewardModel

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from hooked_reward.errors import InputError
from hooked_reward.positions import position_choice
from hooked_reward.sae.autoencoder import SAEConfig, SparseAutoencoder


@dataclass
class TrainingLog:
    """What happened during training: FVU per logged step, final stats on the whole dataset."""

    steps: list[int] = field(default_factory=list)
    fvu: list[float] = field(default_factory=list)
    dead_fraction: list[float] = field(default_factory=list)
    initial_fvu: float = float("nan")
    final_fvu: float = float("nan")
    final_mse: float = float("nan")
    scaling_factor: float = 1.0
    n_activations: int = 0
    config: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- activations
def collect_activations(
    model: HookedRewardModel,
    texts: Sequence[str],
    hook_name: str,
    *,
    positions: Literal["all", "reward"] | None = "all",
    batch_size: int = 8,
    progress: bool = False,
) -> Float[Tensor, "n d"]:
    """Activations at ``hook_name`` for ``texts``, flattened to ``[n, d]`` rows on CPU, float32.

    ``positions="all"`` keeps every non-padding token (``n = total tokens``); ``"reward"`` keeps one row
    per text, at the model's reward position (``n = len(texts)``).
    """
    positions = position_choice(positions)
    rows: list[Tensor] = []
    for start in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="activations"):
        batch = list(texts[start : start + batch_size])
        tokens, mask = model.prepare(batch)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, attention_mask=mask, names_filter=[hook_name])
        act = cache[hook_name]
        if act.dim() == 2:  # already one row per text (e.g. hook_reward_resid)
            rows.append(act.float().cpu())
            continue
        if act.dim() != 3:
            raise InputError(f"{hook_name} gives activations of shape {tuple(act.shape)}; expected [batch, pos, d].")
        if positions == "reward":
            pos = model.reward_positions(mask, tokens).to(act.device)
            rows.append(act[torch.arange(act.shape[0], device=act.device), pos].float().cpu())
        else:
            keep = mask.to(act.device).bool()
            rows.append(act[keep].float().cpu())
    return torch.cat(rows, dim=0)


# ---------------------------------------------------------------------------------------------- training
def _topk_acts(pre: Float[Tensor, "b s"], k: int) -> tuple[Float[Tensor, "b s"], Tensor]:
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values)), top.indices


@torch.inference_mode(False)
@torch.enable_grad()
def train_topk_sae_on_activations(
    acts: Float[Tensor, "n d"],
    *,
    d_sae: int | None = None,
    k: int = 8,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float | None = None,
    auxk_alpha: float = 1 / 32,
    dead_after: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log_every: int = 50,
    hook_name: str | None = None,
    lr_decay_fraction: float = 0.2,
) -> SparseAutoencoder:
    """Train a TopK SAE on activation rows ``[n, d]``; returns it with ``.training_log`` (:class:`TrainingLog`).

    Args:
        acts: training activations, one row per token.
        d_sae: number of latents (default ``8 * d``).
        k: active latents per row.
        steps: optimiser steps; batch_size: rows per step (sampled with replacement across epochs).
        lr: Adam learning rate (default ``2e-4 / sqrt(d_sae / 2**14)``, capped at 3e-3).
        auxk_alpha: weight of the AuxK dead-latent loss (0 disables it).
        lr_decay_fraction: the learning rate decays linearly to 0 over this last fraction of the steps.
        dead_after: a latent that has not fired for this many training rows counts as dead (default
            20 steps' worth of rows, ``20 * min(n, batch_size)``).
        seed: seeds initialisation and batch order (a private generator; global RNG state is untouched).
        progress: show a tqdm progress bar.
        hook_name: stored in the SAE config.

    Training needs autograd, so it runs with gradients enabled (``torch.enable_grad``, outside inference mode)
    even when called inside ``torch.no_grad()`` or ``torch.inference_mode()``: that context is the caller's, for
    their own forward passes, and the trained SAE is the same as without it.
    """
    if acts.dim() != 2:
        raise InputError(f"acts must be [n, d], got shape {tuple(acts.shape)}.")
    n, d = acts.shape
    if n < 2:
        raise InputError("need at least 2 activation rows to train an SAE.")
    d_sae = int(d_sae or 8 * d)
    if not 1 <= k <= d_sae:
        raise InputError(f"k must be in [1, d_sae={d_sae}], got {k}.")
    lr = float(lr if lr is not None else min(2e-4 / math.sqrt(d_sae / 2**14), 3e-3))
    dead_after = int(dead_after if dead_after is not None else 20 * min(n, batch_size))
    device = acts.device
    gen = torch.Generator(device="cpu").manual_seed(seed)

    x_all = acts.detach().float()
    scale = float(math.sqrt(d) / x_all.norm(dim=-1).mean().clamp_min(1e-12))
    x_all = x_all * scale
    mean = x_all.mean(0)
    total_var_per_row = (x_all - mean).pow(2).sum(-1).mean().clamp_min(1e-12)

    cfg = SAEConfig(architecture="topk", d_in=d, d_sae=d_sae, k=k, hook_name=hook_name, source_format="trained")
    sae = SparseAutoencoder(cfg).to(device)
    with torch.no_grad():
        w = torch.randn(d_sae, d, generator=gen).to(device)
        sae.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_dec.copy_(mean)
        sae.b_enc.zero_()
    params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
    opt = torch.optim.Adam(params, lr=lr)
    decay_start = int(steps * (1 - lr_decay_fraction))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < decay_start else max(0.0, (steps - s) / max(1, steps - decay_start))
    )
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    k_aux = max(1, d // 2)

    def fvu_of(x: Tensor) -> Tensor:
        a, _ = _topk_acts((x - sae.b_dec) @ sae.W_enc + sae.b_enc, k)
        return (a @ sae.W_dec + sae.b_dec - x).pow(2).sum(-1).mean() / total_var_per_row

    log = TrainingLog(
        scaling_factor=scale,
        n_activations=n,
        config=dict(
            d_sae=d_sae,
            k=k,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            auxk_alpha=auxk_alpha,
            dead_after=dead_after,
            seed=seed,
            lr_decay_fraction=lr_decay_fraction,
        ),
    )
    with torch.no_grad():
        log.initial_fvu = float(fvu_of(x_all[: min(n, 4096)]))

    perm = torch.randperm(n, generator=gen)
    cursor = 0
    bar = tqdm(range(steps), disable=not progress, desc="train TopK SAE")
    for step in bar:
        if cursor + batch_size > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        idx = perm[cursor : cursor + batch_size].to(device)
        cursor += batch_size
        x = x_all[idx]

        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        a, top_idx = _topk_acts(pre, k)
        recons = a @ sae.W_dec + sae.b_dec
        err = x - recons
        loss = err.pow(2).sum(-1).mean() / total_var_per_row

        fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
        fired[top_idx[a.gather(-1, top_idx) > 0].unique()] = True
        since_fired += x.shape[0]
        since_fired[fired] = 0
        dead = since_fired > dead_after
        n_dead = int(dead.sum())
        if auxk_alpha > 0 and n_dead > 0:
            kk = min(k_aux, n_dead)
            aux_pre = torch.where(dead[None], pre, torch.full_like(pre, -torch.inf))
            aux_a, _ = _topk_acts(aux_pre, kk)
            aux_err = aux_a @ sae.W_dec - err.detach()
            aux_loss = aux_err.pow(2).sum(-1).mean() / total_var_per_row
            loss = loss + auxk_alpha * min(n_dead / k_aux, 1.0) * aux_loss

        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            g = sae.W_dec.grad
            if g is not None:  # keep the update tangent to the unit sphere of each decoder row
                parallel = einops.einsum(g, sae.W_dec, "s d, s d -> s")
                g -= einops.einsum(parallel, sae.W_dec, "s, s d -> s d")
        opt.step()
        sched.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

        if step % log_every == 0 or step == steps - 1:
            f = float(err.detach().pow(2).sum(-1).mean() / total_var_per_row)
            log.steps.append(step)
            log.fvu.append(f)
            log.dead_fraction.append(n_dead / d_sae)
            bar.set_postfix(fvu=f"{f:.4f}", dead=n_dead)

    with torch.no_grad():
        log.final_fvu = float(fvu_of(x_all))
    sae.fold_scaling_factor(scale)
    for p in params:
        p.requires_grad_(True)
    log.final_mse = sae.reconstruction_stats(acts.detach().float())["mse"]
    sae.training_log = log
    return sae


def train_topk_sae(
    model: HookedRewardModel,
    texts: Sequence[str],
    hook_name: str,
    *,
    d_sae: int | None = None,
    k: int = 8,
    steps: int = 2000,
    positions: Literal["all", "reward"] | None = "all",
    batch_size: int = 256,
    lr: float | None = None,
    auxk_alpha: float = 1 / 32,
    seed: int = 0,
    progress: bool = True,
    text_batch_size: int = 8,
) -> SparseAutoencoder:
    """Collect activations of ``model`` at ``hook_name`` on ``texts`` and train a TopK SAE on them.

    ``positions="all"`` trains on every non-padding token, ``"reward"`` on the reward-position residual
    only (one row per text: use many texts). Other arguments as in :func:`train_topk_sae_on_activations`.
    The SAE is returned on the model's device with ``cfg.hook_name = hook_name`` and ``.training_log``.
    """
    acts = collect_activations(
        model, texts, hook_name, positions=positions, batch_size=text_batch_size, progress=progress
    )
    sae = train_topk_sae_on_activations(
        acts,
        d_sae=d_sae,
        k=k,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        auxk_alpha=auxk_alpha,
        seed=seed,
        progress=progress,
        hook_name=hook_name,
    )
    sae.cfg.metadata["positions"] = positions
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")
    return sae.to(device)
