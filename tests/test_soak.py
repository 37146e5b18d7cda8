"""The fault soak: concurrent streams through the relay with faults drawn at random (seeded)
and clients that go away; nothing corrupted, duplicated or lost, and no state left wrong. Also
that its checks do catch each kind of damage."""

from __future__ import annotations

import aiohttp
import orjson

from mitmllm.bench.soak import FALLBACK
from mitmllm.bench.soak import FAULTS
from mitmllm.bench.soak import Answer
from mitmllm.bench.soak import Case
from mitmllm.bench.soak import SoakResult
from mitmllm.bench.soak import SoakSizes
from mitmllm.bench.soak import check
from mitmllm.bench.soak import draw
from mitmllm.bench.soak import run_soak
from mitmllm.bench.soak import sent_by
from mitmllm.mock.upstream import MockUpstream
from mitmllm.protocol import detect


async def test_a_seeded_soak_corrupts_duplicates_and_loses_nothing() -> None:
    sizes = SoakSizes(streams=len(FAULTS) + 8, seed=7, disconnect_share=0.2)
    cases = draw(sizes)
    assert {c.fault for c in cases} == set(FAULTS)  # every fault at least once
    assert any(c.leave_after is not None for c in cases)
    result = await run_soak(sizes)
    assert result.streams == sizes.streams
    assert result.corrupted_frames == 0
    assert result.duplicate_starts == 0
    # The double-start fault's primary commits: its repeated message_start is dropped by the
    # repair stage before the client sees it, never passed on.
    assert result.passed_on_starts == 0
    assert result.repaired > 0, "faults a repair mends are served, repaired"
    assert result.lost_bytes == 0
    assert result.problems == []
    assert result.others == [], "every answer is whole (or repaired), or ends with the error event"
    assert result.healthy > 0 and result.outcomes["ended with an error event"] > 0


# --- the checks can fail -----------------------------------------------------------------------


async def _served(up: MockUpstream, n: int) -> bytes:
    body = {"model": "soak-x", "stream": True, "max_tokens": 5, "messages": []}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{up.url}/v1/messages", data=orjson.dumps(body), headers={"x-soak-id": str(n)}
        ) as resp:
            return await resp.read()


def _answer(n: int, body: bytes) -> Answer:
    return Answer(Case(n, "healthy", "s0", None), status=200, body=body, served_by=FALLBACK)


async def test_the_checks_catch_corruption_duplicates_and_loss() -> None:
    async with MockUpstream(name="primary") as primary, MockUpstream(name=FALLBACK) as fallback:
        sent = [await _served(fallback, n) for n in range(4)]
    assert sent[0] == sent_by(fallback, fallback.received[0])  # the plan reproduces the bytes
    start = sent[1].index(b"event: message_start")
    end = sent[1].index(b"\n\n", start) + 2
    anthropic = detect.by_name("anthropic")
    assert anthropic is not None
    answers = [
        _answer(0, sent[0]),  # whole
        _answer(1, sent[1][:end] + sent[1][start:]),  # a second message_start
        _answer(2, sent[2].replace(b'"text_delta"', b'"text_delta" ', 1)),  # a changed frame
        _answer(3, sent[3][: len(sent[3]) // 2].rpartition(b"\n\n")[0] + b"\n\n"),  # cut short
    ]
    result = SoakResult()
    check(answers, primary, fallback, result)
    assert result.healthy == 1
    assert result.duplicate_starts == 1
    assert result.corrupted_frames == 1
    assert result.lost_bytes > 0
    # The error event mitmllm ends a broken stream with is no corruption.
    ended = sent[3].rpartition(b"event: message_delta")[0] + anthropic.error_event("cut")
    again = SoakResult()
    check([_answer(3, ended)], primary, fallback, again)
    assert again.corrupted_frames == 0 and again.outcomes["ended with an error event"] == 1
