"""Issue 22: every bad input to the core model gets a clear error that names the offending value, and leaves
nothing behind (no hook attached, no weight changed, no file written)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_hf_model, save_checkpoint, word_tokenizer

from hooked_reward import CheckpointError, HookedRewardError, HookedRewardModel, HookError, InputError, NonFiniteError
from hooked_reward.finite import NonFiniteRewardWarning


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[HookedRewardModel, Path]:
    path = save_checkpoint(build_hf_model("llama"), tmp_path_factory.mktemp("bad-inputs") / "llama")
    return HookedRewardModel.from_pretrained(path), path


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def hook_count(model: HookedRewardModel) -> int:
    return sum(len(hp._forward_hooks) + len(hp._backward_hooks) for hp in model.hook_dict.values())


@contextlib.contextmanager
def untouched(model: HookedRewardModel, folder: Path) -> Iterator[None]:
    """Assert that the block leaves the model's weights and hooks, and the files in `folder`, as they were."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    hooks, files = hook_count(model), snapshot(folder)
    yield
    assert hook_count(model) == hooks, "a hook was left attached"
    assert snapshot(folder) == files, "a file was written"
    after = model.state_dict()
    assert all(torch.equal(after[k].nan_to_num(), v.nan_to_num()) for k, v in weights.items()), "a weight changed"


def raises(model: HookedRewardModel, folder: Path, error: type[Exception], *named: str):
    """`pytest.raises(error)` whose message must contain every string in `named`; nothing may change."""

    @contextlib.contextmanager
    def check() -> Iterator[None]:
        with untouched(model, folder), pytest.raises(error) as info:
            yield
        message = str(info.value)
        for value in named:
            assert value in message, f"{value!r} not named in: {message}"

    return check()


# ---------------------------------------------------------------- masks
@pytest.mark.parametrize(
    ("value", "shown"),
    [(2, "2"), (-1, "-1"), (0.5, "0.5"), (math.nan, "nan"), (math.inf, "inf")],
)
def test_mask_values_other_than_0_1(tiny, value: float, shown: str) -> None:
    model, path = tiny
    tokens = torch.randint(4, 96, (3, 5))
    mask = torch.ones(3, 5, dtype=torch.float if isinstance(value, float) else torch.long)
    mask[1, 3] = value
    with raises(model, path, InputError, "row 1", shown, "position 3", "only 0"):
        model(tokens, attention_mask=mask)
    with raises(model, path, InputError, "row 1", shown):
        model.run_with_cache(tokens, attention_mask=mask)


def test_mask_shape_and_all_padding_row(tiny) -> None:
    model, path = tiny
    tokens = torch.randint(4, 96, (2, 5))
    with raises(model, path, InputError, "(2, 4)", "(2, 5)"):
        model(tokens, attention_mask=torch.ones(2, 4, dtype=torch.long))
    with raises(model, path, InputError, "[1]", "all padding"):
        model(tokens, attention_mask=torch.tensor([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]))
    with raises(model, path, InputError, "text input"):
        model(["the cat"], attention_mask=torch.ones(1, 2, dtype=torch.long))
    with raises(model, path, InputError, "twice"):
        model.prepare((tokens, torch.ones_like(tokens)), attention_mask=torch.ones_like(tokens))
    with raises(model, path, InputError, "input_ids", "['attention_mask']"):
        model.prepare({"attention_mask": torch.ones_like(tokens)})


def test_maskless_pad_id_inside_a_row(tiny) -> None:
    """Ids without a mask: a pad id at a row's end is padding; one between other tokens is refused."""
    model, path = tiny
    tokens = torch.tensor([[2, 7, 8, 9, 10], [2, 7, 0, 9, 10]])
    with raises(model, path, InputError, "Row 1", "pad id 0", "position 2", "attention_mask"):
        model(tokens)
    edge = torch.tensor([[2, 7, 8, 9, 10], [2, 7, 8, 0, 0]])
    expected = model(edge, attention_mask=(edge != 0).long())
    assert torch.equal(model(edge), expected)


# ---------------------------------------------------------------- token ids
def test_bad_token_ids(tiny) -> None:
    model, path = tiny
    with raises(model, path, InputError, "bool", "attention_mask"):
        model(torch.ones(2, 4, dtype=torch.bool))
    with raises(model, path, InputError, "torch.float32"):
        model(torch.ones(2, 4))
    with raises(model, path, InputError, "empty", "(0, 4)"):
        model(torch.ones(0, 4, dtype=torch.long))
    with raises(model, path, InputError, "empty"):
        model(torch.ones(2, 0, dtype=torch.long))
    with raises(model, path, InputError, "(1, 2, 4)"):
        model(torch.ones(1, 2, 4, dtype=torch.long))
    ids = torch.ones(2, 4, dtype=torch.long)
    ids[1, 2] = 500
    with raises(model, path, InputError, "row 1", "500", "position 2", "[0, 96)"):
        model(ids)
    with raises(model, path, InputError, "65", "64", "max_length"):
        model(torch.ones(1, 65, dtype=torch.long))
    with raises(model, path, InputError, "Text 0 is a list", "[2, 7, 8]", "torch.tensor(ids)"):
        model([[2, 7, 8], [2, 9]])
    with raises(model, path, InputError, "got float"):
        model(3.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- truncation, positions, heads
@pytest.mark.parametrize("max_length", [0, -3, 2.5, True])
def test_bad_max_length(tiny, max_length: object) -> None:
    model, path = tiny
    with raises(model, path, InputError, "max_length", repr(max_length)):
        model.tokenize(["the cat is good"], max_length=max_length)  # type: ignore[arg-type]
    with raises(model, path, InputError, "max_length"):
        model.prepare(torch.ones(1, 4, dtype=torch.long), max_length=2)


@pytest.mark.parametrize(
    ("positions", "shown"),
    [
        (torch.tensor([1.7, 2.0]), "1.7"),
        (torch.tensor([True, False]), "torch.bool"),
        (1.0, "1.0"),
        (True, "True"),
        ("last", "'last'"),
        (torch.tensor([1, 2, 3]), "(3,)"),
        (9, "[9, 9]"),
    ],
)
def test_bad_cache_positions(tiny, positions: object, shown: str) -> None:
    model, path = tiny
    tokens = torch.randint(4, 96, (2, 5))
    with raises(model, path, InputError, "positions", shown):
        model.run_with_cache(tokens, positions=positions)  # type: ignore[arg-type]


def test_zero_output_head_refused_at_load(tmp_path: Path) -> None:
    path = save_checkpoint(build_hf_model("llama", num_labels=0), tmp_path / "zero")
    files = snapshot(path)
    with pytest.raises(CheckpointError, match="num_labels=0"):
        HookedRewardModel.from_pretrained(path)
    assert snapshot(path) == files


# ---------------------------------------------------------------- hook outputs
@pytest.mark.parametrize(
    ("name", "hook_fn", "named"),
    [
        ("hook_reward", lambda r, hook: r.mean(0, keepdim=True), ["hook_reward", "(1,)", "(3,)"]),
        ("hook_reward", lambda r, hook: r.sum(), ["hook_reward", "shape ()", "(3,)"]),
        ("blocks.0.hook_resid_pre", lambda r, hook: r.double(), ["blocks.0.hook_resid_pre", "torch.float64"]),
        (
            "blocks.1.hook_resid_post",
            lambda r, hook: r[:, :2],
            ["blocks.1.hook_resid_post", "(3, 2, 32)", "(3, 5, 32)"],
        ),
        ("blocks.0.attn.hook_pattern", lambda r, hook: 1.0, ["blocks.0.attn.hook_pattern", "float", "(3, 4, 5, 5)"]),
        ("hook_reward_resid", lambda r, hook: torch.empty_like(r, device="meta"), ["hook_reward_resid", "meta"]),
    ],
)
def test_hook_outputs_checked(tiny, name: str, hook_fn, named: list[str]) -> None:
    """A hook's returned tensor must fit the activation it replaces; the error names the hook and both shapes
    (or dtypes, devices), in every way hooks are added, and the hook is removed after the error."""
    model, path = tiny
    tokens = torch.randint(4, 96, (3, 5))
    with raises(model, path, HookError, *named):
        model.run_with_hooks(tokens, fwd_hooks=[(name, hook_fn)])
    with raises(model, path, HookError, *named), model.hooks(fwd_hooks=[(name, hook_fn)]):
        model(tokens)
    with raises(model, path, HookError, *named), model.hooks(fwd_hooks=[(name, hook_fn)]):
        model.run_with_cache(tokens, positions="reward")


def test_backward_hook_outputs_checked(tiny) -> None:
    """A backward hook's returned gradient must fit the gradient it replaces."""
    model, path = tiny
    tokens = torch.randint(4, 96, (3, 5))
    with raises(model, path, HookError, "blocks.1.hook_resid_pre", "(3, 5)", "(3, 5, 32)"):
        model.run_with_hooks(
            tokens, bwd_hooks=[("blocks.1.hook_resid_pre", lambda grad, hook: grad.sum(-1))]
        ).sum().backward()


def test_hooks_that_fit_still_run(tiny) -> None:
    """Checked hooks change nothing for hooks that return None, the activation, or a tensor like it."""
    model, _ = tiny
    tokens = torch.randint(4, 96, (3, 5))
    clean = model(tokens)
    assert torch.equal(model.run_with_hooks(tokens, fwd_hooks=[("hook_reward", lambda r, hook: None)]), clean)
    doubled = model.run_with_hooks(tokens, fwd_hooks=[("hook_reward", lambda r, hook: 2 * r)])
    assert torch.allclose(doubled, 2 * clean)


# ---------------------------------------------------------------- non-finite rewards
@pytest.fixture(scope="module")
def corrupt() -> HookedRewardModel:
    """A llama whose embedding of token 50 is NaN: only rows containing that token get a NaN reward."""
    hf = build_hf_model("llama")
    with torch.no_grad():
        hf.model.embed_tokens.weight[50] = float("nan")
    return HookedRewardModel.from_hf_model(hf, tokenizer=word_tokenizer())


def rows_with_token_50() -> torch.Tensor:
    torch.manual_seed(5)
    tokens = torch.randint(4, 40, (5, 6))
    tokens[1, 2] = tokens[3, 0] = 50
    return tokens


def test_non_finite_rewards_raise_naming_rows_and_origin(corrupt, tmp_path: Path) -> None:
    tokens = rows_with_token_50()
    for run in (corrupt, lambda t: corrupt.run_with_cache(t)):
        with raises(corrupt, tmp_path, NonFiniteError, "row(s) [1, 3]", "nan", "hook_embed", "nan_policy='omit'"):
            run(tokens)
    with raises(corrupt, tmp_path, InputError, "nan_policy", "'drop'"):
        corrupt(tokens, nan_policy="drop")  # type: ignore[arg-type]


def test_non_finite_origin_is_the_first_hook_point(tiny) -> None:
    """A hook that writes +inf into one row's residual at layer 1: the error names that row and that hook."""
    model, path = tiny
    tokens = torch.randint(4, 96, (3, 5))

    def poison(resid: torch.Tensor, hook) -> torch.Tensor:
        resid = resid.clone()
        resid[2, -1] = float("inf")
        return resid

    with raises(model, path, NonFiniteError, "row(s) [2]", "blocks.1.hook_resid_mid"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", poison)])
    with pytest.warns(NonFiniteRewardWarning, match="Dropped 1 of 3"):
        kept = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", poison)], nan_policy="omit")
    assert torch.allclose(kept, model(tokens)[:2])


def test_nan_policy_omit_and_propagate(corrupt) -> None:
    """omit drops exactly the non-finite rows (from the rewards and the cache) and warns with them; omitting
    per batch and concatenating equals omitting over the whole batch; propagate returns the NaN."""
    tokens = rows_with_token_50()
    raw = corrupt(tokens, nan_policy="propagate")
    assert raw[[1, 3]].isnan().all() and raw[[0, 2, 4]].isfinite().all()
    with pytest.warns(NonFiniteRewardWarning, match="Dropped 2 of 5") as record:
        kept = corrupt(tokens, nan_policy="omit")
    assert record[0].message.rows == [1, 3]
    assert torch.equal(kept, raw[[0, 2, 4]])
    with pytest.warns(NonFiniteRewardWarning):
        batched = torch.cat([corrupt(tokens[:2], nan_policy="omit"), corrupt(tokens[2:], nan_policy="omit")])
    assert torch.allclose(batched, kept, atol=1e-5)
    with pytest.warns(NonFiniteRewardWarning, match="Dropped 2 of 5"):
        rewards, cache = corrupt.run_with_cache(tokens, nan_policy="omit", positions="reward")
    assert torch.allclose(rewards, kept)
    assert torch.allclose(cache["hook_reward"], kept) and cache["blocks.0.hook_resid_pre"].shape[0] == 3
    assert cache.attention_mask.shape[0] == 3 and cache.reward_pos.shape == (3,)
    assert not torch.cat([v.flatten() for v in cache.cache_dict.values()]).isnan().any()
    with pytest.warns(NonFiniteRewardWarning):
        _, grads = corrupt.run_with_cache(
            tokens, names_filter="blocks.1.hook_resid_pre", incl_bwd=True, nan_policy="omit"
        )
    assert (
        grads["blocks.1.hook_resid_pre_grad"].shape[0] == 3 and grads["blocks.1.hook_resid_pre_grad"].isfinite().all()
    )


# ---------------------------------------------------------------- hostile checkpoints
def test_remote_code_in_a_checkpoint_never_runs(tmp_path: Path) -> None:
    """A checkpoint whose config points at its own Python code (`auto_map`) loads HF's class; the code never runs."""
    import json

    path = save_checkpoint(build_hf_model("llama"), tmp_path / "remote")
    marker = tmp_path / "ran.txt"
    (path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.Config", "AutoModelForSequenceClassification": "evil.Model"}
    (path / "config.json").write_text(json.dumps(config))
    tokens = torch.randint(4, 96, (2, 5))
    expected = HookedRewardModel.from_hf_model(build_hf_model("llama"))(tokens)
    files = snapshot(path)
    try:
        model = HookedRewardModel.from_pretrained(path)
    except HookedRewardError:
        pass  # refusing the checkpoint is as good as ignoring its code
    else:
        assert torch.allclose(model(tokens), expected, atol=1e-5)
    assert not marker.exists(), "the checkpoint's code ran"
    assert snapshot(path) == files


def test_analyses_apply_their_own_nan_policy_to_model_rewards() -> None:
    """Analyses with a `nan_policy` run the model with nan_policy="propagate", so their own policy decides: a
    model whose embedding of "bad" is NaN raises naming the pairs, or drops exactly the pairs that use "bad"."""
    from hooked_reward.analysis.compare import compare_models
    from hooked_reward.analysis.probes.suite import score_texts

    hf = build_hf_model("llama")
    bad_id = word_tokenizer().convert_tokens_to_ids("bad")
    with torch.no_grad():
        hf.model.embed_tokens.weight[bad_id] = float("nan")
    broken = HookedRewardModel.from_hf_model(hf, tokenizer=word_tokenizer())
    clean = HookedRewardModel.from_hf_model(build_hf_model("llama"), tokenizer=word_tokenizer())
    responses = ["the cat is good", "the dog is bad", "a great answer", "bad bad cat"]
    responses += ["yes thanks", "no please", "the dog was very good", "a cat is not awful"]
    rewards, _ = score_texts(broken, ["question"] * 8, responses)
    assert math.isnan(rewards[1]) and math.isnan(rewards[3]) and np.isfinite(np.delete(rewards, [1, 3])).all()
    pairs = [("question", chosen, rejected) for chosen, rejected in zip(responses, responses[::-1], strict=True)]
    with pytest.raises(NonFiniteError):
        compare_models(broken, clean, pairs, n_boot=99, n_boot_geometry=10, progress=False)
    result = compare_models(broken, clean, pairs, n_boot=99, n_boot_geometry=10, progress=False, nan_policy="omit")
    assert any("4 pair(s) with non-finite values were dropped" in note for note in result.notes)
