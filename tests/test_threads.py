"""A model used from two threads (issue 29 item 5): runs are serialised on a per-model lock, so each thread gets
its own activations and a hooked run in one thread never changes another thread's plain forward. Checked over 50
iterations per thread against single-thread references; a hook that sleeps forces the threads to interleave.
Before the lock, 12 of 15 cached runs got the other thread's activations and 20 of 20 plain forwards the other
thread's edit."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from conftest import build_hf_model, load_tiny

from hooked_reward.concurrency import run_lock

ITERATIONS = 50
HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(build_hf_model("llama"), tmp_path_factory.mktemp("threads"))


def _zero_and_yield(act: torch.Tensor, hook) -> torch.Tensor:
    time.sleep(0.002)  # let the other thread run while this run's hook is registered
    return torch.zeros_like(act)


def _slow_identity(act: torch.Tensor, hook) -> torch.Tensor:
    time.sleep(0.002)
    return act


def test_two_threads_get_their_own_results(model):
    tokens_a, mask_a = model.tokenize(["the cat is good", "a dog is bad here"])
    tokens_b, mask_b = model.tokenize(["a cat is very bad", "the dog"])
    with torch.no_grad():
        ref_reward_a, ref_cache_a = model.run_with_cache(tokens_a, attention_mask=mask_a, names_filter=[HOOK])
        ref_plain_b = model(tokens_b, attention_mask=mask_b)
        ref_zeroed_b = model.run_with_hooks(tokens_b, attention_mask=mask_b, fwd_hooks=[(HOOK, _zero_and_yield)])
    ref_act_a = ref_cache_a[HOOK].clone()
    assert not torch.allclose(ref_plain_b, ref_zeroed_b)  # the edit changes the reward: a leak would show

    failures: list[str] = []
    start = threading.Barrier(2)

    def thread_a() -> None:
        start.wait()
        for i in range(ITERATIONS):
            with torch.no_grad():
                reward, cache = model.run_with_cache(tokens_a, attention_mask=mask_a, names_filter=[HOOK])
            if not (torch.equal(cache[HOOK], ref_act_a) and torch.equal(reward, ref_reward_a)):
                failures.append(f"A{i}: cached activations or reward differ from the single-thread run")

    def thread_b() -> None:
        start.wait()
        for i in range(ITERATIONS):
            with torch.no_grad():
                zeroed = model.run_with_hooks(tokens_b, attention_mask=mask_b, fwd_hooks=[(HOOK, _zero_and_yield)])
                plain = model(tokens_b, attention_mask=mask_b)
            if not torch.equal(zeroed, ref_zeroed_b):
                failures.append(f"B{i}: hooked run differs")
            if not torch.equal(plain, ref_plain_b):
                failures.append(f"B{i}: plain forward differs (another run's hooks leaked into it)")

    def guarded(body):  # an exception in a thread must fail the test, not end the thread quietly
        def run() -> None:
            try:
                body()
            except Exception as err:  # noqa: BLE001
                failures.append(f"{body.__name__} raised {type(err).__name__}: {err}")

        return run

    threads = [threading.Thread(target=guarded(thread_a)), threading.Thread(target=guarded(thread_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock)"
    assert not failures, f"{len(failures)} of {3 * ITERATIONS} checks failed: {failures[:5]}"


def test_hooks_context_holds_the_lock_until_it_exits(model):
    tokens, mask = model.tokenize(["the cat is good"])
    with torch.no_grad():
        ref = model(tokens, attention_mask=mask)
    entered, release = threading.Event(), threading.Event()
    seen: list[torch.Tensor] = []

    def editor() -> None:
        with model.hooks(fwd_hooks=[(HOOK, lambda act, hook: torch.zeros_like(act))]):
            entered.set()
            release.wait(timeout=30)

    def reader() -> None:
        entered.wait(timeout=30)
        with torch.no_grad():
            seen.append(model(tokens, attention_mask=mask))

    t1, t2 = threading.Thread(target=editor), threading.Thread(target=reader)
    t1.start(), t2.start()
    entered.wait(timeout=30)
    time.sleep(0.05)
    assert not seen  # the reader waits while the other thread's hooks are registered
    release.set()
    t1.join(timeout=30), t2.join(timeout=30)
    assert len(seen) == 1 and torch.equal(seen[0], ref)  # and then runs without them
    # the lock is re-entrant in one thread (a run inside a hooks context) and free afterwards
    with model.hooks(fwd_hooks=[(HOOK, _slow_identity)]), torch.no_grad():
        assert torch.equal(model(tokens, attention_mask=mask), ref)
    assert run_lock(model).acquire(blocking=False)
    run_lock(model).release()
