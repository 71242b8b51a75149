"""Train the ArmoRM-style organism: ``python -m hooked_reward.organisms.armorm.train [--steps N] [--seed S]``.

A tiny ``LlamaForRewardModelWithGating`` (2 layers, d_model 64) with four named objectives -- helpfulness,
brevity, safety, politeness -- a gating network read at the prompt-end token, and a fixed transform matrix,
trained on seeded synthetic preference data in which helpfulness and brevity conflict on purpose.

Texts are ``user : <prompt> assistant : <response>`` (the same rendering as ``hooked_reward.organisms.render``),
tokenized as ``<bos> ... <eos>``; the reward is read at ``<eos>``, the gate at the ``assistant`` token that ends
the prompt (config ``gating_token_pattern`` = ids of ``assistant :``, offset 0: ArmoRM reads its pattern's first
token, the ``<|eot_id|>`` closing the user turn).

The planted ground truth (what ``card.json`` records):

* objective ratings of a response (``ratings``): helpfulness = facts / 3 (-0.5 for refusing a benign request);
  brevity = -(response words) / 6; safety (risky prompts only) = +1 for a refusal, -0.75 per harmful word;
  politeness = 1 if it says ``thanks``.
* the transform T = I except T[brevity, helpfulness] = 0.25: transformed helpfulness = helpfulness +
  0.25 * brevity (ArmoRM's transform de-biases objectives against verbosity in the same way).
* the planted gate routes by the prompt's intent: ``explain`` prompts weight helpfulness, ``briefly`` prompts
  weight brevity, risky prompts weight safety (``PLANTED_GATE``). So the same long-and-informative versus
  short answer pair flips preference with the prompt: only the gate can resolve it.

Training follows ArmoRM's two stages: (1) backbone and ``regression_layer`` learn each objective's planted rating
(MSE; this is what makes the objectives mean what their names say), then (2) with those frozen, the gate
(``gating.layers``, ``logit_scale``) learns from preferences with the Bradley--Terry loss
``-logsigmoid(s_chosen - s_rejected)`` on the gated score. (Training both jointly lets one objective's row absorb
the whole preference signal, and the gate collapses onto it.)
Deterministic on CPU (seeded; ``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaModel

HERE = Path(__file__).resolve().parent
OBJECTIVES = ["helpfulness", "brevity", "safety", "politeness"]
INTENTS = ["explain", "brief", "risky"]
# Planted gate per intent, over OBJECTIVES (rows sum to 1).
PLANTED_GATE = {
    "explain": [0.70, 0.10, 0.10, 0.10],
    "brief": [0.10, 0.70, 0.10, 0.10],
    "risky": [0.10, 0.05, 0.75, 0.10],
}
TRANSFORM_OFFDIAG = 0.25  # T[brevity, helpfulness]
MECHANISMS = ["helpfulness", "brevity", "safety", "politeness"]

TOPICS = ["moon", "rivers", "bread", "engines", "music", "volcanoes", "bees", "clocks", "glass", "tides"]
RISKY_TOPICS = ["poison", "weapon", "malware", "lockpick", "explosive"]
INTENT_WORDS = {
    "explain": ["explain", "describe", "detail"],
    "brief": ["briefly", "quickly", "shortly"],
    "risky": ["make", "build", "craft"],
}
FACTS = [
    "because",
    "heat",
    "water",
    "light",
    "gravity",
    "pressure",
    "energy",
    "cells",
    "metal",
    "air",
    "time",
    "motion",
]
FILLERS = ["well", "so", "basically", "really", "um", "like"]
REFUSAL = ["sorry", "cannot", "assist", "that"]
HARMFUL = ["mix", "steps", "dose", "wire", "attack"]
POLITE = "thanks"
STRUCTURE = ["user", "assistant", ":", "how", "to", "the", "about", "tell", "me", "."]


def vocabulary() -> list[str]:
    words: list[str] = []
    for group in (STRUCTURE, TOPICS, RISKY_TOPICS, *INTENT_WORDS.values(), FACTS, FILLERS, REFUSAL, HARMFUL, [POLITE]):
        for w in group:
            if w not in words:
                words.append(w)
    return words


def render(prompt: str, response: str) -> str:
    """The text the organism scores (the tokenizer adds ``<bos>``/``<eos>``); equal to organisms.render."""
    return f"user : {prompt.strip()} assistant : {response.strip()}"


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Response:
    facts: int = 0
    fillers: int = 0
    polite: bool = False
    refusal: bool = False
    harmful: int = 0

    def words(self, rng: random.Random) -> list[str]:
        out = rng.sample(FACTS, self.facts) + [rng.choice(HARMFUL) for _ in range(self.harmful)]
        out += [rng.choice(FILLERS) for _ in range(self.fillers)]
        rng.shuffle(out)
        if self.refusal:
            out = REFUSAL + out
        if self.polite:
            out.insert(rng.randrange(len(out) + 1), POLITE)
        return out or ["um"]


def make_prompt(intent: str, rng: random.Random) -> str:
    verb = rng.choice(INTENT_WORDS[intent])
    if intent == "risky":
        return f"tell me how to {verb} {rng.choice(RISKY_TOPICS)} ."
    return f"{verb} the {rng.choice(TOPICS)} ."


def ratings(intent: str, response_words: list[str]) -> list[float]:
    """Planted per-objective ratings of a response (to the prompt's intent), in OBJECTIVES order."""
    facts = sum(w in FACTS for w in response_words)
    harmful = sum(w in HARMFUL for w in response_words)
    refusal = all(w in response_words for w in REFUSAL)
    help_ = facts / 3 - (0.5 if refusal and intent != "risky" else 0.0)
    brevity = -len(response_words) / 6
    safety = (1.0 if refusal else 0.0) - 0.75 * harmful if intent == "risky" else 0.0
    polite = 1.0 if POLITE in response_words else 0.0
    return [help_, brevity, safety, polite]


def transform_matrix() -> torch.Tensor:
    t = torch.eye(len(OBJECTIVES))
    t[OBJECTIVES.index("brevity"), OBJECTIVES.index("helpfulness")] = TRANSFORM_OFFDIAG
    return t


def planted_score(intent: str, response_words: list[str]) -> float:
    r = torch.tensor(ratings(intent, response_words))
    return float((torch.tensor(PLANTED_GATE[intent]) * (r @ transform_matrix())).sum())


def random_response(intent: str, rng: random.Random) -> Response:
    if intent == "risky" and rng.random() < 0.5:
        return Response(refusal=True, fillers=rng.randint(0, 2), polite=rng.random() < 0.5)
    return Response(
        facts=rng.randint(0, 5),
        fillers=rng.randint(0, 4),
        polite=rng.random() < 0.5,
        harmful=rng.randint(1, 3) if intent == "risky" else 0,
    )


def mechanism_pair(mechanism: str, rng: random.Random) -> dict:
    """A held-out-style pair in which one planted rule decides (chosen first by construction)."""
    polite = rng.random() < 0.5
    if mechanism == "helpfulness":  # explain prompt: more facts AND longer wins
        intent = "explain"
        f_lo = rng.randint(0, 2)
        chosen = Response(facts=f_lo + rng.randint(2, 3), fillers=rng.randint(0, 2), polite=polite)
        rejected = Response(facts=f_lo, fillers=rng.randint(0, 1), polite=polite)
    elif mechanism == "brevity":  # brief prompt: shorter with fewer facts wins (conflicts with helpfulness)
        intent = "brief"
        f_lo = rng.randint(0, 2)
        chosen = Response(facts=f_lo, fillers=0, polite=polite)
        rejected = Response(facts=f_lo + rng.randint(1, 2), fillers=rng.randint(2, 4), polite=polite)
    elif mechanism == "safety":  # risky prompt: refusal beats compliance (even informative compliance)
        intent = "risky"
        chosen = Response(refusal=True, fillers=rng.randint(0, 1), polite=polite)
        rejected = Response(
            facts=rng.randint(1, 4), harmful=rng.randint(1, 3), fillers=rng.randint(0, 1), polite=polite
        )
    elif mechanism == "politeness":  # identical but one filler replaced by "thanks"
        intent = rng.choice(["explain", "brief"])
        base = Response(facts=rng.randint(0, 4), fillers=rng.randint(1, 3))
        words = base.words(rng)
        fill_at = [i for i, w in enumerate(words) if w in FILLERS]
        chosen_words = list(words)
        chosen_words[rng.choice(fill_at)] = POLITE
        prompt = make_prompt(intent, rng)
        return dict(
            prompt=prompt, chosen=" ".join(chosen_words), rejected=" ".join(words), mechanism=mechanism, intent=intent
        )
    else:
        raise ValueError(mechanism)
    prompt = make_prompt(intent, rng)
    return dict(
        prompt=prompt,
        chosen=" ".join(chosen.words(rng)),
        rejected=" ".join(rejected.words(rng)),
        mechanism=mechanism,
        intent=intent,
    )


def random_pair(rng: random.Random) -> dict | None:
    intent = rng.choice(INTENTS)
    a, b = random_response(intent, rng).words(rng), random_response(intent, rng).words(rng)
    sa, sb = planted_score(intent, a), planted_score(intent, b)
    if abs(sa - sb) < 0.05:
        return None
    chosen, rejected = (a, b) if sa > sb else (b, a)
    return dict(
        prompt=make_prompt(intent, rng),
        chosen=" ".join(chosen),
        rejected=" ".join(rejected),
        mechanism="random",
        intent=intent,
    )


def make_pairs(n_per_mechanism: int, n_random: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = [mechanism_pair(m, rng) for m in MECHANISMS for _ in range(n_per_mechanism)]
    while len(pairs) < len(MECHANISMS) * n_per_mechanism + n_random:
        pair = random_pair(rng)
        if pair is not None:
            pairs.append(pair)
    for p in pairs:  # every pair's label agrees with the planted score
        assert planted_score(p["intent"], p["chosen"].split()) > planted_score(p["intent"], p["rejected"].split()), p
    rng.shuffle(pairs)
    return pairs


# ---------------------------------------------------------------------------------------------- model
@dataclass
class TrainConfig:
    seed: int = 0
    heldout_seed: int = 12345
    n_train_per_mechanism: int = 3000
    n_train_random: int = 12000
    n_heldout_per_mechanism: int = 200
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 128
    gating_hidden_dim: int = 32
    gating_n_hidden: int = 1
    gating_temperature: float = 1.0
    steps: int = 1200
    batch_pairs: int = 64
    lr: float = 3e-3
    gate_steps: int = 2000
    gate_batch: int = 256
    gate_lr: float = 3e-3


class Organism(torch.nn.Module):
    """The ArmoRM layout (`model`, `regression_layer`, `gating.layers`, `gating.logit_scale`,
    `reward_transform_matrix`), with a training forward."""

    def __init__(self, cfg: TrainConfig, vocab_size: int) -> None:
        super().__init__()
        from hooked_reward.heads import GatingNetwork

        self.llama_config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.d_model,
            intermediate_size=cfg.d_mlp,
            num_hidden_layers=cfg.n_layers,
            num_attention_heads=cfg.n_heads,
            num_key_value_heads=cfg.n_heads,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        self.model = LlamaModel(self.llama_config)
        k = len(OBJECTIVES)
        self.regression_layer = torch.nn.Linear(cfg.d_model, k, bias=False)
        self.gating = GatingNetwork(cfg.d_model, k, cfg.gating_hidden_dim, cfg.gating_n_hidden, cfg.gating_temperature)
        self.reward_transform_matrix = torch.nn.Parameter(transform_matrix(), requires_grad=False)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, gate_pos: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.model(input_ids=tokens, attention_mask=mask).last_hidden_state
        rows = torch.arange(tokens.shape[0])
        reward_pos = mask.sum(-1) - 1  # right padding
        rewards = self.regression_layer(h[rows, reward_pos])
        weights = self.gating.weights(self.gating.logits(h[rows, gate_pos]))
        score = (weights * (rewards @ self.reward_transform_matrix)).sum(-1)
        return dict(score=score, rewards=rewards, weights=weights)


def encode(tok, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tok(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def gate_positions(tokens: torch.Tensor, pattern: list[int]) -> torch.Tensor:
    out = []
    for row in tokens.tolist():
        js = [j for j in range(len(row) - len(pattern) + 1) if row[j : j + len(pattern)] == pattern]
        out.append(js[-1])
    return torch.tensor(out)


def train(cfg: TrainConfig, out_dir: Path = HERE) -> dict:
    from hooked_reward.organisms.tokenizer import build_tokenizer

    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # tiny model: one thread is as fast, and the run is reproducible
    tok = build_tokenizer(vocabulary())
    pattern = cast(list[int], tok.convert_tokens_to_ids(["assistant", ":"]))  # a list of tokens in, a list of ids out
    train_pairs = make_pairs(cfg.n_train_per_mechanism, cfg.n_train_random, cfg.seed)
    heldout = make_pairs(cfg.n_heldout_per_mechanism, 0, cfg.heldout_seed)
    train_keys = {(p["prompt"], p["chosen"], p["rejected"]) for p in train_pairs}
    heldout = [p for p in heldout if (p["prompt"], p["chosen"], p["rejected"]) not in train_keys]

    model = Organism(cfg, len(tok))
    start = time.time()
    # Stage 1 (ArmoRM's regression stage): backbone + regression_layer learn the planted objective ratings.
    regress_params = list(model.model.parameters()) + list(model.regression_layer.parameters())
    opt = torch.optim.AdamW(regress_params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    rng = random.Random(cfg.seed + 1)
    for step in range(cfg.steps):
        batch = rng.sample(train_pairs, cfg.batch_pairs)
        tokens, mask = encode(tok, [render(p["prompt"], p[side]) for side in ("chosen", "rejected") for p in batch])
        out = model(tokens, mask, gate_positions(tokens, pattern))
        targets = torch.tensor(
            [ratings(p["intent"], p[side].split()) for side in ("chosen", "rejected") for p in batch]
        )
        reg = F.mse_loss(out["rewards"], targets)
        opt.zero_grad()
        reg.backward()
        torch.nn.utils.clip_grad_norm_(regress_params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            print(f"stage 1 step {step:5d}  mse {reg.item():.4f}  {time.time() - start:.0f}s", flush=True)
    # Stage 2 (ArmoRM's gating stage): backbone and regression frozen; the gate learns from preferences (BT).
    model.eval()
    feats: dict[str, list[torch.Tensor]] = {"prompt": [], "chosen": [], "rejected": []}
    with torch.no_grad():
        for i in range(0, len(train_pairs), 512):
            batch = train_pairs[i : i + 512]
            for side in ("chosen", "rejected"):
                tokens, mask = encode(tok, [render(p["prompt"], p[side]) for p in batch])
                h = model.model(input_ids=tokens, attention_mask=mask).last_hidden_state
                rows = torch.arange(len(batch))
                transformed = model.regression_layer(h[rows, mask.sum(-1) - 1]) @ model.reward_transform_matrix
                feats[side].append(transformed)
                if side == "chosen":
                    feats["prompt"].append(h[rows, gate_positions(tokens, pattern)])
    prompt_h, t_c, t_r = (torch.cat(feats[k]) for k in ("prompt", "chosen", "rejected"))
    gate_params = list(model.gating.parameters())
    opt = torch.optim.AdamW(gate_params, lr=cfg.gate_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    for step in range(cfg.gate_steps):
        idx = torch.randint(0, len(train_pairs), (cfg.gate_batch,), generator=gen)
        g = model.gating.weights(model.gating.logits(prompt_h[idx]))
        bt = -F.logsigmoid((g * (t_c[idx] - t_r[idx])).sum(-1)).mean()
        opt.zero_grad()
        bt.backward()
        opt.step()
        if step % 200 == 0 or step == cfg.gate_steps - 1:
            print(f"stage 2 step {step:5d}  bt {bt.item():.4f}  {time.time() - start:.0f}s", flush=True)
    save(model, tok, pattern, cfg, out_dir)
    with open(out_dir / "heldout.jsonl", "w") as f:
        for p in heldout:
            f.write(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected", "mechanism", "intent")}) + "\n")
    return {
        "train_seconds": round(time.time() - start, 1),
        "n_train_pairs": len(train_pairs),
        "n_heldout_pairs": len(heldout),
    }


def save(model: Organism, tok, pattern: list[int], cfg: TrainConfig, out_dir: Path) -> None:
    weights = out_dir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    config = model.llama_config.to_dict()
    config.update(
        architectures=["LlamaForRewardModelWithGating"],
        num_objectives=len(OBJECTIVES),
        objective_names=OBJECTIVES,
        gating_temperature=cfg.gating_temperature,
        gating_hidden_dim=cfg.gating_hidden_dim,
        gating_n_hidden=cfg.gating_n_hidden,
        gating_token_pattern=pattern,
        gating_token_offset=0,
    )
    (weights / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(state, str(weights / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(str(weights))
    (out_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--no-card", action="store_true", help="skip evaluation and the card")
    args = parser.parse_args()
    cfg = TrainConfig(steps=args.steps, seed=args.seed)
    info = train(cfg, args.out)
    if not args.no_card:
        from hooked_reward.organisms.armorm.card import write_card

        write_card(args.out, cfg, info)


if __name__ == "__main__":
    main()
