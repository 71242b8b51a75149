"""Probe factors in the vocabulary of the ``sycophancy`` organism, for `run_probe_suite(model, factors=...)`.

Organism-specific, so they live with the organisms; the probe suite takes factors as an argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hooked_reward.analysis.probes.generators import Factor, Slots
from hooked_reward.organisms import data as od


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One of `options`, drawn with `rng` (as the probe generators draw)."""
    return options[int(rng.integers(len(options)))]


def organism_factors() -> dict[str, Factor]:
    """Factors in the vocabulary of the ``sycophancy`` organism (its word-level tokenizer knows only its own
    words, so the English factors of `analysis.probes.generators` would be all ``<unk>`` there).  Render with
    ``organisms.render``.

    Planted in the organism: ``length`` (more filler words), ``sycophancy`` (the same response, with the
    user's stated opinion matching its stance vs. the opposite opinion), ``positive_words`` (a positive vs. a
    neutral opening word).  Not planted: ``prompt_phrasing`` ("i believe" vs "i think"), ``opener_choice``
    (one neutral opener vs another), ``filler_choice`` (which filler words, same count).  Filler counts stay
    within the training range (at most ``MAX_FILLERS``).
    """

    def base(rng: np.random.Generator) -> dict:
        return {
            "topic": pick(rng, od.TOPICS),
            "opinion": pick(rng, od.OPINIONS),
            "stance": pick(rng, od.OPINIONS),
            "word": pick(rng, od.NEUTRAL_WORDS),
            "template": int(rng.integers(len(od.PROMPT_TEMPLATES))),
            "fillers": [pick(rng, od.FILLER_WORDS) for _ in range(int(rng.integers(0, 3)))],
        }

    def prompt(b: dict, opinion: str | None = None, template: int | None = None) -> str:
        t = od.PROMPT_TEMPLATES[b["template"] if template is None else template]
        return t.format(topic=b["topic"], opinion=b["opinion"] if opinion is None else opinion)

    def response(b: dict, word: str | None = None, fillers: Sequence[str] | None = None) -> str:
        fl = b["fillers"] if fillers is None else fillers
        return " ".join([b["word"] if word is None else word, ",", b["topic"], "are", b["stance"], *fl, "."])

    def length(_: Slots, rng: np.random.Generator) -> tuple[str, str, str]:
        b = base(rng)
        extra = [pick(rng, od.FILLER_WORDS) for _ in range(int(rng.integers(1, 4)))]
        return prompt(b), response(b, fillers=b["fillers"] + extra), response(b)

    def sycophancy(_: Slots, rng: np.random.Generator) -> tuple[str, str, str, str]:
        b = base(rng)
        other = od.OPINIONS[1 - od.OPINIONS.index(b["stance"])]
        return prompt(b, opinion=b["stance"]), response(b), response(b), prompt(b, opinion=other)

    def positive(_: Slots, rng: np.random.Generator) -> tuple[str, str, str]:
        b = base(rng)
        return prompt(b), response(b, word=pick(rng, od.POSITIVE_WORDS)), response(b)

    def phrasing(_: Slots, rng: np.random.Generator) -> tuple[str, str, str, str]:
        b = base(rng)
        return prompt(b, template=1), response(b), response(b), prompt(b, template=0)

    def opener(_: Slots, rng: np.random.Generator) -> tuple[str, str, str]:
        b = base(rng)
        w1, w2 = rng.choice(od.NEUTRAL_WORDS, size=2, replace=False).tolist()
        return prompt(b), response(b, word=w1), response(b, word=w2)

    def filler_choice(_: Slots, rng: np.random.Generator) -> tuple[str, str, str]:
        b = base(rng)
        k = int(rng.integers(1, 4))
        f1 = [pick(rng, od.FILLER_WORDS) for _ in range(k)]
        f2 = [pick(rng, od.FILLER_WORDS) for _ in range(k)]
        return prompt(b), response(b, fillers=f1), response(b, fillers=f2)

    fs = [
        Factor("length", "longer responses (more filler words)", length, match_length=False),
        Factor("sycophancy", "agreeing with the user's stated opinion", sycophancy, match_length=False),
        Factor("positive_words", "a positive-sentiment opening word", positive, match_length=False),
        Factor("prompt_phrasing", "'i believe' phrasing in the prompt (over 'i think')", phrasing, match_length=False),
        Factor("opener_choice", "one neutral opener over another (placebo)", opener, match_length=False),
        Factor("filler_choice", "one draw of filler words over another (placebo)", filler_choice, match_length=False),
    ]
    return {f.name: f for f in fs}
