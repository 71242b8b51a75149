"""Are the probe texts inside the model's domain? And the user's own labelled pairs as probe factors.

The built-in probes are English templates. A reward model trained on other text (another vocabulary, another
language, a narrow task) reads them as noise, and a "significant" factor on such texts says nothing about the
model (issue 36: six of ten unrelated factors came out significant on a model with a small vocabulary). Before
its verdicts are read, `domain_check` measures two things:

* **unknown tokens**: the share of the probe texts' tokens, special tokens aside, that are the tokenizer's unknown
  token (a tokenizer without one, byte-level BPE, never has unknown tokens: this check is then 0);
* **the baseline**: the model's rewards on the probe texts against its rewards on in-domain texts (the user's own
  pairs, when given): `z = (mean probe reward − mean domain reward) / sd of domain rewards`, and the mean margin
  (chosen − rejected) on the domain pairs, the scale a probe effect is read against.

The probes are out of domain when more than `max_unknown` of their tokens are unknown or `|z| > max_z`. The report
then says so and marks every verdict "(out of domain)".

`pairs_by_label` turns a user's labelled preference pairs into probe factors: one factor per label, `Δ =
r(chosen) − r(rejected)` per pair (a factor = pairs that differ in one attribute, the chosen side having it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hooked_reward.analysis.probes.generators import ProbePair
from hooked_reward.errors import InputError
from hooked_reward.pairs import PreferencePair

if TYPE_CHECKING:
    from hooked_reward.analysis.probes.suite import ProbeSuiteResult
    from hooked_reward.model import HookedRewardModel

__all__ = ["DomainCheck", "domain_check", "mark_out_of_domain", "pairs_by_label", "MAX_UNKNOWN", "MAX_Z"]

#: What an out-of-domain factor's verdict gets appended.
OUT_OF_DOMAIN = " (out of domain)"

#: Above this share of unknown tokens the probe texts are out of the tokenizer's domain.
MAX_UNKNOWN = 0.05
#: Above this |z| of the probe texts' mean reward against the domain's rewards, they are out of the model's domain.
MAX_Z = 3.0


@dataclass
class DomainCheck:
    """The result of `domain_check`: `unknown_share` (of the probe texts' non-special tokens), `n_tokens`, the
    probe texts' reward mean and sd, the domain's (NaN without domain texts), `z`, the domain pairs'
    `baseline_margin` (NaN without them), `out_of_domain` and the `reasons` in words."""

    unknown_share: float
    n_tokens: int
    probe_mean: float
    probe_sd: float
    domain_mean: float = math.nan
    domain_sd: float = math.nan
    z: float = math.nan
    baseline_margin: float = math.nan
    out_of_domain: bool = False
    reasons: list[str] = field(default_factory=list)

    def caveat(self) -> str:
        """The sentence the report shows ('' when the probes are in the domain)."""
        if not self.out_of_domain:
            return ""
        return (
            "The built-in probe texts lie outside this model's domain ("
            + "; ".join(self.reasons)
            + "), so their verdicts say little about the model: each is marked (out of domain). Probe the model on "
            "its own data with --pairs (one factor per label)."
        )

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _unknown_share(model: HookedRewardModel, texts: Sequence[str]) -> tuple[float, int]:
    tok = model.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    special = set(getattr(tok, "all_special_ids", ())) - ({unk} if unk is not None else set())
    n = n_unk = 0
    for text in texts:
        tokens, mask = model.tokenize([text])
        ids = [int(i) for i, m in zip(tokens[0].tolist(), mask[0].tolist(), strict=True) if m and i not in special]
        n += len(ids)
        n_unk += sum(i == unk for i in ids) if unk is not None else 0
    return (n_unk / n if n else math.nan), n


def _rewards(model: HookedRewardModel, texts: Sequence[str], batch_size: int, output: int | str | None) -> np.ndarray:
    from hooked_reward.analysis.probes.suite import score_texts

    r, _ = score_texts(
        model, [""] * len(texts), list(texts), render=lambda _p, t: t, batch_size=batch_size, output=output
    )
    return np.asarray(r, dtype=np.float64)


def domain_check(
    model: HookedRewardModel,
    probe_texts: Sequence[str],
    *,
    domain_pairs: Sequence[tuple[str, str]] | None = None,
    max_unknown: float = MAX_UNKNOWN,
    max_z: float = MAX_Z,
    batch_size: int = 32,
    output: int | str | None = None,
) -> DomainCheck:
    """Whether `probe_texts` (rendered, as the model reads them) lie in the model's domain (module docstring).

    `domain_pairs`: in-domain `(chosen_text, rejected_text)` pairs (the user's own), for the reward baseline and
    the baseline margin; without them only the unknown-token check runs."""
    if not probe_texts:
        raise InputError("domain_check needs probe texts.")
    share, n = _unknown_share(model, probe_texts)
    with torch.no_grad():
        probe = _rewards(model, probe_texts, batch_size, output)
    check = DomainCheck(share, n, float(probe.mean()), float(probe.std(ddof=1)) if len(probe) > 1 else math.nan)
    if math.isfinite(share) and share > max_unknown:
        check.reasons.append(f"{share:.0%} of their tokens are unknown to the tokenizer")
    if domain_pairs:
        chosen = _rewards(model, [c for c, _ in domain_pairs], batch_size, output)
        rejected = _rewards(model, [r for _, r in domain_pairs], batch_size, output)
        both = np.concatenate([chosen, rejected])
        check.domain_mean, check.domain_sd = float(both.mean()), float(both.std(ddof=1)) if len(both) > 1 else math.nan
        check.baseline_margin = float((chosen - rejected).mean())
        if check.domain_sd > 0:
            check.z = (check.probe_mean - check.domain_mean) / check.domain_sd
            if abs(check.z) > max_z:
                check.reasons.append(
                    f"the model's rewards on them average {check.probe_mean:.3g}, {check.z:+.1f} sd from its "
                    f"rewards on the given pairs ({check.domain_mean:.3g} ± {check.domain_sd:.3g})"
                )
    check.out_of_domain = bool(check.reasons)
    return check


def mark_out_of_domain(result: ProbeSuiteResult, check: DomainCheck, factors: Sequence[str]) -> ProbeSuiteResult:
    """Record `check` on `result` (`result.meta["domain"]`) and, when the probes are out of domain, mark the verdict
    of each of `factors` (the built-in ones the check was run on) "(out of domain)" and add the caveat to the
    notes. Returns `result`, changed in place."""
    result.meta["domain"] = {**check.as_dict(), "factors": list(factors), "caveat": check.caveat()}
    if check.out_of_domain:
        for s in result.stats:
            if s.factor in factors and not s.verdict.endswith(OUT_OF_DOMAIN):
                s.verdict += OUT_OF_DOMAIN
        result.notes.insert(0, check.caveat())
    return result


def pairs_by_label(
    pairs: Sequence[PreferencePair], *, unlabelled: str | None = None
) -> tuple[dict[str, list[ProbePair]], dict[str, str]]:
    """Probe factors from labelled preference pairs, already rendered (`PreferencePair.rendered`: no prompt, full
    texts): `({label: [ProbePair(label, "", chosen, rejected)]}, {label: phrase})`, biased = chosen. Pairs without
    a label go to the factor `unlabelled` when it is given, else raise `InputError`."""
    out: dict[str, list[ProbePair]] = {}
    for i, p in enumerate(pairs):
        if not (isinstance(p.chosen, str) and isinstance(p.rejected, str)) or p.prompt:
            raise InputError(f"pair {i} is not rendered; pass `pair.rendered(model)` (full texts, no prompt).")
        label = p.label if p.label is not None else unlabelled
        if label is None:
            raise InputError(
                f"pair {i} has no label: a probe factor is the pairs of one label (the attribute the chosen side "
                "has). Add a label field (mechanism, subset or label) to every pair."
            )
        out.setdefault(label, []).append(ProbePair(label, "", p.chosen, p.rejected, meta=dict(p.metadata)))
    if not out:
        raise InputError("No pairs to probe.")
    return out, {label: f"the chosen side of the '{label}' pairs" for label in out}
