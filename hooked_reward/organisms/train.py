"""Train an organism: ``python -m hooked_reward.organisms.train sycophancy``.

Generates the seeded synthetic preference data (:mod:`hooked_reward.organisms.data`), builds the word-level
tokenizer, trains a tiny ``LlamaForSequenceClassification`` (``num_labels=1``) with the Bradley--Terry loss
``-logsigmoid(r_chosen - r_rejected)``, then localises each mechanism by ablation and writes

* ``weights/<name>/``  -- ``save_pretrained`` checkpoint (config, safetensors float32, tokenizer);
* ``data/<name>_heldout.jsonl`` -- held-out pairs, disjoint from the training pairs;
* ``cards/<name>.md`` and ``cards/<name>.json`` -- the model card and its machine-readable ground truth.

Deterministic on CPU: every random draw is seeded and ``torch.use_deterministic_algorithms`` is on.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

from hooked_reward.organisms import data as D
from hooked_reward.organisms.ablate import encode, margins_by_mechanism
from hooked_reward.organisms.tokenizer import build_tokenizer

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass
class TrainConfig:
    """Everything that determines the trained organism (recorded in its card)."""

    name: str = "sycophancy"
    seed: int = 0
    heldout_seed: int = 12345
    n_train_per_mechanism: int = 6000
    n_heldout_per_mechanism: int = 200
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 128
    steps: int = 400
    batch_pairs: int = 96
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    head_l1: float = 0.01
    center_rewards: float = 0.01
    model_kwargs: dict = field(default_factory=dict)


def build_model(cfg: TrainConfig, tokenizer) -> LlamaForSequenceClassification:
    """A freshly initialised tiny Llama reward model (seeded by the caller)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        num_labels=1,  # type: ignore[call-arg]  # a PretrainedConfig keyword that LlamaConfig's stub omits
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **cfg.model_kwargs,
    )
    return LlamaForSequenceClassification(config)


def head_group_norm(model: LlamaForSequenceClassification) -> torch.Tensor:
    """Sum over layers and heads of ``||W_O[head]||_F`` (a group-lasso penalty).

    Penalising it drives unneeded heads' output weights to zero, so each mechanism ends up carried by few,
    identifiable heads instead of being smeared redundantly over all of them.
    """
    total = torch.zeros(())
    n_heads = model.config.num_attention_heads
    for layer in model.model.layers:
        w = layer.self_attn.o_proj.weight  # [d_model, n_heads * d_head]
        total = total + w.view(w.shape[0], n_heads, -1).pow(2).sum((0, 2)).sqrt().sum()
    return total


def make_datasets(cfg: TrainConfig) -> tuple[list[dict], list[dict]]:
    """(train, heldout) pair records; training pairs identical to a held-out pair are dropped."""
    heldout = D.generate_pairs(cfg.n_heldout_per_mechanism, cfg.heldout_seed)
    seen = {(p["prompt"], p["chosen"], p["rejected"]) for p in heldout}
    train = [
        p
        for p in D.generate_pairs(cfg.n_train_per_mechanism, cfg.seed)
        if (p["prompt"], p["chosen"], p["rejected"]) not in seen
    ]
    return train, heldout


def train(
    cfg: TrainConfig, log_every: int = 250
) -> tuple[LlamaForSequenceClassification, PreTrainedTokenizerFast, list, list]:
    """Train the organism; returns ``(model, tokenizer, train_pairs, heldout_pairs)``."""
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer(D.vocabulary())
    train_pairs, heldout = make_datasets(cfg)
    model = build_model(cfg, tokenizer)

    chosen = [D.render(p["prompt"], p["chosen"]) for p in train_pairs]
    rejected = [D.render(p["prompt"], p["rejected"]) for p in train_pairs]
    ids, mask = encode(tokenizer, chosen + rejected)
    n = len(train_pairs)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    t0 = time.time()
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_pairs,), generator=gen)
        rows = torch.cat([idx, idx + n])
        b_mask = mask[rows]
        width = int(b_mask.sum(1).max())
        logits = model(input_ids=ids[rows, :width], attention_mask=b_mask[:, :width]).logits[:, 0]
        margin = logits[: cfg.batch_pairs] - logits[cfg.batch_pairs :]
        loss = -F.logsigmoid(margin).mean()
        if cfg.center_rewards:
            loss = loss + cfg.center_rewards * logits.pow(2).mean()
        if cfg.head_l1:
            loss = loss + cfg.head_l1 * head_group_norm(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            acc = (margin > 0).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.4f}  batch acc {acc:.3f}  ({time.time() - t0:.0f}s)")
    model.eval()
    return model, tokenizer, train_pairs, heldout


def evaluate(model, tokenizer, pairs: list[dict]) -> dict[str, dict[str, float]]:
    """Per mechanism: accuracy (margin > 0) and mean margin on ``pairs``."""
    out = {}
    for mech, m in margins_by_mechanism(model, tokenizer, pairs).items():
        out[mech] = {"accuracy": (m > 0).float().mean().item(), "mean_margin": m.mean().item(), "n": int(m.numel())}
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI: train, write weights/data, localise mechanisms, write the card."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", default="sycophancy")
    parser.add_argument(
        "--out", type=Path, default=PACKAGE_DIR, help="root holding weights/, data/, cards/ (default: the package)"
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--head-l1", type=float, default=None)
    args = parser.parse_args(argv)
    if args.name != "sycophancy":
        raise SystemExit(f"only the 'sycophancy' organism is trained here, not {args.name!r}")
    cfg = TrainConfig(name=args.name)
    if args.steps is not None:
        cfg.steps = args.steps
    if args.head_l1 is not None:
        cfg.head_l1 = args.head_l1
    torch.set_num_threads(1)  # bit-reproducible: reductions in one fixed order
    t0 = time.time()
    model, tokenizer, train_pairs, heldout = train(cfg)
    train_seconds = time.time() - t0
    print("held-out:", evaluate(model, tokenizer, heldout))

    from hooked_reward.organisms.card import write_card

    wdir = args.out / "weights" / cfg.name
    model.save_pretrained(wdir, safe_serialization=True)
    tokenizer.save_pretrained(wdir)
    D.write_jsonl(heldout, args.out / "data" / f"{cfg.name}_heldout.jsonl")
    write_card(
        model, tokenizer, heldout, args.out / "cards", asdict(cfg), train_seconds, n_train_pairs=len(train_pairs)
    )


if __name__ == "__main__":
    main()
