from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.framing import KEPT_ENDS, DroppedLine, LineSplitter


def test_splits_and_keeps_partial() -> None:
    s = LineSplitter(max_line=100)
    assert s.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert s.buffered == 4
    assert s.feed(b":2}\r\n\n") == [b'{"b":2}']
    assert s.flush() is None


def test_oversized_line_is_dropped_and_counted() -> None:
    s = LineSplitter(max_line=8)
    assert s.feed(b"0123456789") == []
    assert s.oversized == 1
    assert s.buffered == 0
    assert s.feed(b"more-of-the-same\nok\n") == [b"ok"]
    assert s.oversized == 1
    assert s.feed(b"123456789\nfine\n") == [b"fine"]
    assert s.oversized == 2


lines_st = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").strip(b"\r")))


@given(
    lines=lines_st, cuts=st.lists(st.integers(min_value=0, max_value=2000)), cap=st.integers(1, 50)
)
def test_any_chunking_gives_the_same_lines(lines: list[bytes], cuts: list[int], cap: int) -> None:
    data = b"".join(line + b"\n" for line in lines)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    s = LineSplitter(max_line=cap)
    got: list[bytes] = []
    for chunk in chunks:
        got.extend(s.feed(chunk))
    expected = [line for line in lines if line and len(line) <= cap]
    assert got == expected
    assert s.oversized == sum(1 for line in lines if len(line) > cap)
    # Each dropped line is reported once its end is seen, with its size and its two ends.
    too_long = [line for line in lines if len(line) > cap]
    assert s.take_dropped() == [
        DroppedLine(len(line), line[:KEPT_ENDS], line[-KEPT_ENDS:]) for line in too_long
    ]
    assert s.take_dropped() == []


@given(
    lines=lines_st,
    cuts=st.lists(st.integers(min_value=0, max_value=2000)),
    cap=st.integers(1, 50),
)
def test_crlf_lines_split_anywhere_give_the_same_lines(
    lines: list[bytes], cuts: list[int], cap: int
) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    s = LineSplitter(max_line=cap)
    got: list[bytes] = []
    for chunk in chunks:
        got.extend(s.feed(memoryview(chunk)))
    assert got == [line for line in lines if line and len(line) <= cap]
    assert s.oversized == sum(1 for line in lines if len(line) > cap)
    assert s.flush() is None


def test_line_of_exactly_max_line_is_kept() -> None:
    s = LineSplitter(max_line=4)
    assert s.feed(b"abcd") == []
    assert s.feed(b"\r") == []  # the CR of a CRLF may arrive alone
    assert s.feed(b"\nabcde\n") == [b"abcd"]
    assert s.oversized == 1


def test_flush_returns_the_unterminated_last_line_within_the_cap() -> None:
    s = LineSplitter(max_line=4)
    assert s.feed(bytearray(b"ok\nlast")) == [b"ok"]
    assert s.flush() == b"last"
    assert s.buffered == 0
    assert s.flush() is None
    s.feed(b"abcd\r")
    assert s.flush() == b"abcd"
    s.feed(b"abcde")  # over the cap: dropped, not returned at EOF
    assert s.flush() is None
    assert s.oversized == 1
    s.feed(b"  \r")
    assert s.flush() is None  # blank


def test_discarding_spans_feeds_until_the_newline() -> None:
    s = LineSplitter(max_line=3)
    assert s.feed(b"0123") == []
    assert s.feed(b"4567") == []
    assert s.feed(b"89") == []
    assert s.oversized == 1  # one line, counted once
    assert s.feed(b"\nab\n") == [b"ab"]


def test_max_line_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LineSplitter(max_line=0)


def test_a_dropped_line_keeps_its_ends_and_size_not_its_body() -> None:
    s = LineSplitter(max_line=10_000)
    body = b"H" * 5000 + b"x" * 100_000 + b"T" * 5000
    for i in range(0, len(body), 3000):
        assert s.feed(body[i : i + 3000]) == []
        assert s.buffered <= 10_001
    assert s.take_dropped() == []  # not ended yet
    assert s.feed(b"\r\nnext\n") == [b"next"]
    (dropped,) = s.take_dropped()
    assert dropped.size == len(body)
    assert dropped.head == b"H" * KEPT_ENDS
    assert dropped.tail == b"T" * KEPT_ENDS
    # Cut off by the end of the stream: reported at flush.
    s.feed(b"y" * 20_000)
    assert s.flush() is None
    assert [d.size for d in s.take_dropped()] == [20_000]
