"""Builders of tiny reward checkpoints (from configs, saved with `save_pretrained`, loaded from disk; no downloads)
and of inputs for them. `tests/conftest.py` re-exports these names (`from conftest import build_hf_model`) and
wraps them in fixtures, including session-scoped caches (`tiny_model`, `tiny_checkpoint`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

if TYPE_CHECKING:
    from hooked_reward import HookedRewardModel

WORDS = "the a good bad great awful cat dog is was very not answer question yes no please thanks".split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
VOCAB = 96

ARCH_CONFIGS: dict[str, tuple[str, str, dict]] = {
    "llama": (
        "LlamaConfig",
        "LlamaForSequenceClassification",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            max_position_embeddings=64,
        ),
    ),
    "mistral": (
        "MistralConfig",
        "MistralForSequenceClassification",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=4,
            max_position_embeddings=64,
        ),
    ),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForSequenceClassification",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            query_pre_attn_scalar=8,
            max_position_embeddings=64,
        ),
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForSequenceClassification",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        ),
    ),
    "gpt2": ("GPT2Config", "GPT2ForSequenceClassification", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForSequenceClassification",
        dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=64,
        ),
    ),
}
ARCHS = list(ARCH_CONFIGS)


def word_tokenizer(extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS (and `extra_words`) that prepends <s> (BOS) and pads with <pad> (id 0)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS + list(extra_words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"


def chat_tokenizer(bos_in_template: bool = True) -> PreTrainedTokenizerFast:
    """The word tokenizer with a chat template (roles and contents, each turn closed by </s>); the template starts
    with the BOS token when `bos_in_template` (Llama/Gemma style), else not (Qwen style: then `tokenize` must
    not add one, as `apply_chat_template(..., tokenize=True)` does not)."""
    tok = word_tokenizer(extra_words=("user", "assistant", "system", ":"))
    tok.chat_template = ("{{ bos_token }}" if bos_in_template else "") + CHAT_TEMPLATE
    return tok


def build_hf_model(arch: str, num_labels: int = 1, seed: int = 0) -> torch.nn.Module:
    """A tiny HF reward model of `arch` with weights re-drawn so rewards are O(1)."""
    cfg_name, model_name, kwargs = ARCH_CONFIGS[arch]
    config = getattr(transformers, cfg_name)(vocab_size=VOCAB, num_labels=num_labels, pad_token_id=0, **kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5 * 1.5)
            elif "norm" in name or "ln" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p)) if "bias" not in name else p.normal_(0, 0.1)
            else:
                p.normal_(0.0, 0.1)
    return model


def padded_tokens(
    lengths: tuple[int, ...] = (10, 7, 5, 3), left: bool = False, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token rows of the given lengths, padded (pad id 0) on the left or right, with their mask."""
    torch.manual_seed(seed)
    width = max(lengths)
    tokens = torch.randint(4, VOCAB, (len(lengths), width))
    mask = torch.zeros_like(tokens)
    for i, n in enumerate(lengths):
        if left:
            mask[i, width - n :] = 1
        else:
            mask[i, :n] = 1
    return tokens * mask, mask


def save_checkpoint(hf_model: torch.nn.Module, out: Path) -> Path:
    """Save a tiny HF reward model with the word tokenizer: a checkpoint directory as users have them."""
    hf_model.save_pretrained(out)
    word_tokenizer().save_pretrained(out)
    return out


def load_tiny(hf_model: torch.nn.Module, out: Path) -> HookedRewardModel:
    """Save `hf_model` (with the word tokenizer) to `out` and load it back as a HookedRewardModel."""
    from hooked_reward import HookedRewardModel

    return HookedRewardModel.from_pretrained(save_checkpoint(hf_model, out))


def hf_reference_rewards(path: Path, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's HF score, running the row alone (no padding): the acceptance reference."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for i in range(tokens.shape[0]):
            alone = tokens[i][mask[i].bool()][None]
            rows.append(model(alone).logits[0])
    out = torch.stack(rows)
    return out[:, 0] if out.shape[-1] == 1 else out
