"""The organisms' word-level tokenizer: one id per word, ``<bos> text <eos>``, right padding with ``<pad>``.

Built with the ``tokenizers`` library (WordLevel model, whitespace-split pre-tokenizer, a
TemplateProcessing post-processor that adds ``<bos>`` in front and ``<eos>`` at the end) and wrapped as a
``transformers.PreTrainedTokenizerFast`` so it saves and loads with ``save_pretrained``/``from_pretrained``.
``<pad>`` (id 0) is distinct from ``<eos>`` (id 2): the last non-pad token is always ``<eos>``, which is the
reward position.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK)


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer with ids ``<pad>=0, <bos>=1, <eos>=2, <unk>=3`` then ``words`` in order."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        if w in vocab:
            raise ValueError(f"duplicate word {w!r}")
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    # WordPiece decoder with an unused prefix joins words by single spaces (an exact round trip).
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
        model_max_length=64,
    )
