"""`ReviewCache`: the brain's reviews by the Kubernetes API (TokenReview, SubjectAccessReview)
are kept for their time and shared while in flight; the API's trouble is never kept."""

from __future__ import annotations

import asyncio

import pytest

from stockade.brain.reviewcache import ReviewCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Refused(Exception):
    pass


class Trouble(Exception):
    pass


async def test_an_answer_is_kept_for_its_time_and_no_longer() -> None:
    clock, calls = Clock(), []

    async def review() -> str:
        calls.append(1)
        return f"answer {len(calls)}"

    cache: ReviewCache[str] = ReviewCache(ttl=10, max_entries=10, clock=clock)
    assert await cache.get(b"k", review) == "answer 1"
    clock.now += 9.9
    assert await cache.get(b"k", review) == "answer 1"
    clock.now += 0.2
    assert await cache.get(b"k", review) == "answer 2"
    # a known deadline (a token's expiry) shortens the time
    assert await cache.get(b"t", review, expires=clock.now + 1) == "answer 3"
    clock.now += 1.5
    assert await cache.get(b"t", review) == "answer 4"


async def test_concurrent_askers_share_one_review() -> None:
    gate, calls = asyncio.Event(), []

    async def review() -> int:
        calls.append(1)
        await gate.wait()
        return 7

    cache: ReviewCache[int] = ReviewCache(ttl=10, max_entries=10)
    askers = [asyncio.ensure_future(cache.get(b"k", review)) for _ in range(20)]
    await asyncio.sleep(0)
    askers[0].cancel()  # one asker giving up does not cancel the others' review
    gate.set()
    results = await asyncio.gather(*askers[1:])
    assert results == [7] * 19 and len(calls) == 1


async def test_a_refusal_is_kept_and_trouble_is_not() -> None:
    calls: list[str] = []

    async def refuse() -> int:
        calls.append("refuse")
        raise Refused("no")

    async def trouble() -> int:
        calls.append("trouble")
        raise Trouble("API unreachable")

    cache: ReviewCache[int] = ReviewCache(ttl=10, max_entries=10)
    for _ in range(3):
        with pytest.raises(Refused):
            await cache.get(b"r", refuse, keep=lambda e: isinstance(e, Refused))
        with pytest.raises(Trouble):
            await cache.get(b"t", trouble, keep=lambda e: isinstance(e, Refused))
    assert calls.count("refuse") == 1 and calls.count("trouble") == 3


async def test_the_oldest_answers_go_first_past_the_bound() -> None:
    async def review() -> int:
        return 1

    cache: ReviewCache[int] = ReviewCache(ttl=10, max_entries=3)
    for i in range(5):
        await cache.get(bytes([i]), review)
    assert list(cache._cache) == [bytes([2]), bytes([3]), bytes([4])]
