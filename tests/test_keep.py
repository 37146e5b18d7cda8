"""What a flow keeps of a long stream: all of it up to the limit, else its start and its end
around a marker, never more than the limit; a spill file gets every byte of a long one."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.engine.keep import KeptBody
from mitmllm.engine.keep import limit_of
from mitmllm.engine.keep import marker
from mitmllm.protocol.sse import decode_all

PIECES = st.lists(st.binary(min_size=1, max_size=64), max_size=60)


class Spill(io.BytesIO):
    name = "spill.sse"

    def close(self) -> None:  # keep the bytes readable after the body closes it
        self.closed_by_body = True


@settings(max_examples=300, deadline=None)
@given(PIECES, st.integers(2, 400))
def test_kept_is_bounded_and_made_of_the_start_and_the_end(pieces: list[bytes], limit: int) -> None:
    spills: list[Spill] = []

    def spill() -> Spill:
        spills.append(Spill())
        return spills[-1]

    body = KeptBody(limit, spill=spill, option="opt")
    for i, p in enumerate(pieces):
        body.append(p)
        if i % 7 == 3:  # reading in the middle changes nothing that follows
            assert len(body.value) <= limit + len(marker(body.cut, "opt")) + 2
    whole = b"".join(pieces)
    kept = body.value
    assert body.total == len(whole)
    if len(whole) <= limit:
        assert kept == whole and body.cut == 0 and not spills
        return
    before, sep, tail = kept.partition(marker(body.cut, "opt"))
    assert sep
    # Two line ends glue the marker to a head that does not end in one.
    head = before if whole.startswith(before) else before.removesuffix(b"\n\n")
    assert whole.startswith(head) and whole.endswith(tail)
    assert len(head) <= limit // 2 and len(tail) <= limit - limit // 2
    assert body.cut == len(whole) - len(head) - len(tail) > 0
    assert spills[0].getvalue() == whole  # nothing lost on disk
    assert body.spill_name == "spill.sse"


@settings(max_examples=300, deadline=None)
@given(PIECES, st.sampled_from([None, 0, 2, 100, 300, 1000]), st.data())
def test_pieces_recorded_in_batches_are_kept_as_one_by_one(
    pieces: list[bytes], limit: int | None, data: st.DataObject
) -> None:
    """`extend` (a deferring tap records a batch at once) keeps what `append` keeps piece by
    piece, within the limit or past it, spilled or not: the cut points are the pieces'."""
    spilled = data.draw(st.booleans())
    bodies = [KeptBody(limit, spill=Spill if spilled else None, option="opt") for _ in range(2)]
    batched, one_by_one = bodies
    i = 0
    while i < len(pieces):
        n = data.draw(st.integers(1, len(pieces) - i))
        batch = pieces[i : i + n]
        batched.extend(batch, sum(map(len, batch)))
        for piece in batch:
            one_by_one.append(piece)
        i += n
        assert (batched.total, batched.cut, batched.over) == (
            one_by_one.total,
            one_by_one.cut,
            one_by_one.over,
        )
    assert batched.value == one_by_one.value
    if spilled and batched.spill is not None:
        assert batched.spill.getvalue() == one_by_one.spill.getvalue()  # type: ignore[attr-defined]


def test_whole_pieces_are_kept_while_they_fit() -> None:
    events = [b"data: %d\n\n" % i for i in range(1000)]  # 10-12 bytes each
    body = KeptBody(1000, option="mitmllm_keep_body")
    for e in events:
        body.append(e)
    evs, partial = decode_all(body.value)
    assert partial is None
    assert evs[0].raw == events[0] and evs[-1].raw == events[-1]
    (note,) = [e for e in evs if e.is_comment]
    assert "not kept here (mitmllm_keep_body)" in note.comments[0]
    kept = [e.raw for e in evs if not e.is_comment]
    assert all(e in events for e in kept)  # never a cut event
    assert len(body.value) <= 1000 + len(marker(body.cut, "mitmllm_keep_body"))


def test_without_a_limit_everything_is_kept() -> None:
    body = KeptBody(None)
    for _ in range(100):
        body.append(b"x" * 1000)
    assert body.value == b"x" * 100_000 and body.cut == 0


@pytest.mark.parametrize(
    ("text", "limit"), [("16MiB", 16 * 1024 * 1024), ("all", None), ("2KB", 2000)]
)
def test_the_option_takes_a_size_or_all(text: str, limit: int | None) -> None:
    assert limit_of(text) == limit


@pytest.mark.parametrize("text", ["", "12", "lots", "-1MiB"])
def test_the_option_refuses_what_is_no_useful_size(text: str) -> None:
    with pytest.raises(ValueError):
        limit_of(text)


def test_a_big_event_then_small_ones_keeps_the_end_of_the_big_one() -> None:
    body = KeptBody(1000, option="opt")
    small = [b"data: %d\n\n" % i for i in range(3)]
    big = b"data: " + b"x" * 5000 + b"\n\n"
    for piece in [*small, big, *small]:
        body.append(piece)
    kept = body.value
    head, _, tail = kept.partition(marker(body.cut, "opt"))
    assert len(tail) == 500  # the room is used, not just the small pieces after the big one
    assert tail.endswith(b"".join(small)) and tail.startswith(b"x")


def test_the_tail_starts_on_an_event_boundary_where_a_piece_has_one() -> None:
    body = KeptBody(100, option="opt")
    piece = b"".join(b"data: %02d\n\n" % i for i in range(40))  # one piece of 40 events
    body.append(piece)
    body.append(b"data: end\n\n")
    head, _, tail = body.value.partition(marker(body.cut, "opt"))
    events, partial = decode_all(tail)
    assert partial is None and events[-1].raw == b"data: end\n\n"
    assert all(e.data is not None and len(e.raw) in (10, 11) for e in events)
