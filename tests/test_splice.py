"""Edits as splices: only the edited values' bytes change, and the result parses to the original
with exactly those values changed (hypothesis over generated JSON text: spacing, escapes, huge
numbers, nesting, repeated keys)."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.protocol.splice import DELETE
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import apply
from mitmllm.protocol.splice import diff
from mitmllm.protocol.splice import encode
from mitmllm.protocol.splice import locate
from mitmllm.protocol.splice import replaced
from mitmllm.protocol.splice import splice
from mitmllm.protocol.splice import splice_event
from mitmllm.protocol.sse import decode_all
from mitmllm.protocol.sse import parse_block

Span = tuple[int, int]

# --- a generator of JSON text that knows where each value lies ------------------------------------

WS = st.text(" \t\n\r", max_size=3).map(str.encode)
SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
SHORT["\t"] = "\\t"
#: Characters a rewrite must not disturb: separators, HTML-escaped ones, accents, astral.
SPECIAL = ["\u2028", "\u2029", "<", "&", "\u00e9", "/", '"', "\\", "\U0001f600", "\x00", "\ud800"]
TEXT = st.text(st.one_of(st.characters(), st.sampled_from(SPECIAL)), max_size=12)


@st.composite
def string_text(draw: st.DrawFn, value: str) -> bytes:
    """`value` as a JSON string, each character raw or escaped at random."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        forced = ch in '"\\' or code < 0x20 or 0xD800 <= code <= 0xDFFF
        how = draw(st.sampled_from(["raw", "u", "short"]))
        if how == "raw" and not forced:
            out.append(ch)
        elif how == "short" and ch in SHORT:
            out.append(SHORT[ch])
        elif code > 0xFFFF:  # a surrogate pair
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
        else:
            out.append(f"\\u{code:04x}" if draw(st.booleans()) else f"\\u{code:04X}")
    out.append('"')
    return "".join(out).encode("utf-8")


NUMBERS = st.one_of(
    st.integers(-(10**40), 10**40).map(str),
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["-0", "-0.0", "1E+2", "1e-2", "0.5e10", "123456789012345678901234567890"]),
)
KEYS = st.one_of(st.sampled_from(["model", "a", "b", "id", "model\u00e9", "mo/del", ""]), TEXT)


@st.composite
def json_text(draw: st.DrawFn, depth: int = 0) -> tuple[Any, bytes, dict[tuple[Any, ...], Span]]:
    """(value, text, spans): the parsed value, JSON text for it, and where each path's value
    lies in the text (for a repeated key, the last member's, as a parser reads it)."""
    kinds = ["string", "number", "literal"]
    if depth < 8:
        kinds += ["object", "array"] * (2 if depth < 3 else 1)
    kind = draw(st.sampled_from(kinds))
    if kind == "string":
        value = draw(TEXT)
        text = draw(string_text(value))
        return value, text, {(): (0, len(text))}
    if kind == "number":
        number = draw(NUMBERS)
        return json.loads(number), number.encode(), {(): (0, len(number))}
    if kind == "literal":
        literal = draw(st.sampled_from(["true", "false", "null"]))
        return json.loads(literal), literal.encode(), {(): (0, len(literal))}
    out = bytearray(b"{" if kind == "object" else b"[")
    spans: dict[tuple[Any, ...], Span] = {}
    container: Any = {} if kind == "object" else []
    n = draw(st.integers(0, 4))
    out += draw(WS)
    for i in range(n):
        if i:
            out += b"," + draw(WS)
        if kind == "object":
            key = draw(KEYS)
            out += draw(string_text(key)) + draw(WS) + b":" + draw(WS)
            container.pop(key, None)  # a repeated key: the last one counts
            spans = {p: s for p, s in spans.items() if p[:1] != (key,)}
            step: Any = key
        else:
            step = i
        value, text, inner = draw(json_text(depth + 1))
        at = len(out)
        for path, (s, e) in inner.items():
            spans[(step, *path)] = (at + s, at + e)
        out += text + draw(WS)
        if kind == "object":
            container[step] = value
        else:
            container.append(value)
    out += b"}" if kind == "object" else b"]"
    spans[()] = (0, len(out))
    return container, bytes(out), spans


@st.composite
def documents(draw: st.DrawFn) -> tuple[Any, bytes, dict[tuple[Any, ...], Span]]:
    """A JSON document with whitespace around it."""
    value, text, spans = draw(json_text())
    lead = draw(WS)
    shifted = {p: (s + len(lead), e + len(lead)) for p, (s, e) in spans.items()}
    return value, lead + text + draw(WS), shifted


NEW_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=False, allow_infinity=False),
        TEXT,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values and of the same types (1 is not 1.0, 0 is not false)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)


# --- properties -----------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(documents(), st.data())
def test_a_splice_changes_only_the_bytes_of_the_value(doc: Any, data: st.DataObject) -> None:
    value, text, spans = doc
    path = data.draw(st.sampled_from(sorted(spans, key=repr)))
    new = data.draw(NEW_VALUES)
    s, e = spans[path]
    out = splice(text, [Edit(path, new)])
    assert out == text[:s] + encode(new) + text[e:]
    assert locate(text, path) == (s, e)
    expected = apply(copy.deepcopy(value), [Edit(path, new)])
    assert same(json.loads(out), expected)


@settings(max_examples=200, deadline=None)
@given(documents(), st.data())
def test_several_edits_at_once(doc: Any, data: st.DataObject) -> None:
    value, text, spans = doc
    paths = data.draw(st.lists(st.sampled_from(sorted(spans, key=repr)), max_size=4, unique=True))
    # Edits may not nest inside each other.
    paths = [p for p in paths if not any(q != p and p[: len(q)] == q for q in paths)]
    edits = [Edit(p, data.draw(NEW_VALUES)) for p in paths]
    out = splice(text, edits)
    expect = text
    for edit in sorted(edits, key=lambda ed: spans[ed.path][0], reverse=True):
        s, e = spans[edit.path]
        expect = expect[:s] + encode(edit.value) + expect[e:]
    assert out == expect
    assert same(json.loads(out), apply(copy.deepcopy(value), edits))
    # the same change to a copy: the value the edits were read from stays as it was
    before = copy.deepcopy(value)
    assert same(replaced(value, edits), json.loads(out))
    assert same(value, before)


@settings(max_examples=300, deadline=None)
@given(documents(), st.data())
def test_deleting_and_inserting_members(doc: Any, data: st.DataObject) -> None:
    value, text, spans = doc
    objects = [p for p in spans if isinstance(_at(value, p), dict)]
    assume(objects)
    parent = data.draw(st.sampled_from(sorted(objects, key=repr)))
    node = _at(value, parent)
    edits = []
    for key in data.draw(st.lists(st.sampled_from(sorted(node)), unique=True)) if node else []:
        edits.append(Edit((*parent, key), DELETE))
    for key in data.draw(st.lists(KEYS, max_size=3, unique=True)):
        if key not in node:
            edits.append(Edit((*parent, key), data.draw(NEW_VALUES)))
    out = splice(text, edits)
    assert same(json.loads(out), apply(copy.deepcopy(value), edits))
    before = copy.deepcopy(value)
    assert same(replaced(value, edits), json.loads(out)) and same(value, before)
    if not edits:
        assert out == text
    # Bytes outside the object are untouched.
    s, e = spans[parent]
    assert out[:s] == text[:s] and out[len(out) - (len(text) - e) :] == text[e:]


@settings(max_examples=300, deadline=None)
@given(documents(), st.data())
def test_diff_then_splice_gives_the_rewritten_value(doc: Any, data: st.DataObject) -> None:
    value, text, spans = doc
    after = copy.deepcopy(value)
    for path in data.draw(st.lists(st.sampled_from(sorted(spans, key=repr)), max_size=3)):
        try:
            parent = _at(after, path[:-1]) if path else None
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed it
        action = data.draw(st.sampled_from(["set", "delete", "insert"]))
        if not path:
            after = data.draw(NEW_VALUES)
        elif action == "delete" and isinstance(parent, dict) and isinstance(path[-1], str):
            parent.pop(path[-1], None)
        elif action == "insert" and isinstance(parent, dict):
            parent[data.draw(KEYS)] = data.draw(NEW_VALUES)
        elif action == "insert" and isinstance(parent, list):
            parent.append(data.draw(NEW_VALUES))
        elif _settable(parent, path[-1]):
            parent[path[-1]] = data.draw(NEW_VALUES)
    out = splice(text, diff(value, after))
    assert same(json.loads(out), after)
    if same(value, after):
        assert out == text


def _settable(parent: Any, key: Any) -> bool:
    if isinstance(parent, dict):
        return isinstance(key, str)
    return isinstance(parent, list) and isinstance(key, int) and key < len(parent)


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


# --- SSE events -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(documents(), st.data())
def test_an_event_keeps_its_fields_comments_and_line_ends(doc: Any, data: st.DataObject) -> None:
    value, text, spans = doc
    assume(b"\r" not in text and b"\n" not in text)  # line breaks of the data come below
    eol = data.draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    space = data.draw(st.sampled_from([b"data: ", b"data:"]))
    head = data.draw(st.sampled_from([b"", b"event: x" + eol, b": note" + eol + b"id: 7" + eol]))
    raw = head + space + text + eol + eol
    ev = parse_block(raw, 3, 100)
    path = data.draw(st.sampled_from(sorted(spans, key=repr)))
    new = data.draw(NEW_VALUES)
    out = splice_event(ev, [Edit(path, new)])
    s, e = spans[path]
    at = len(head) + len(space)
    assert out.raw == raw[: at + s] + encode(new) + raw[at + e :]
    assert out.event == ev.event and out.id == ev.id and out.comments == ev.comments
    assert (out.index, out.offset) == (3, 100)
    assert same(json.loads(out.data or ""), apply(copy.deepcopy(value), [Edit(path, new)]))


def test_data_over_several_lines_is_edited_where_it_lies() -> None:
    raw = b'event: m\ndata: {"a": 1,\ndata:  "model": "up",\ndata: "b": [2]}\n\n'
    ev = parse_block(raw, 0, 10)
    out = splice_event(ev, [Edit(("model",), "alias")])
    assert out.raw == raw.replace(b'"up"', b'"alias"')
    assert json.loads(out.data or "") == {"a": 1, "model": "alias", "b": [2]}
    # A replacement that spans lines takes their breaks with it.
    out = splice_event(ev, [Edit((), {"x": 1})])
    assert out.raw == b'event: m\ndata: {"x":1}\n\n'


def test_the_first_block_keeps_its_byte_order_mark() -> None:
    raw = b'\xef\xbb\xbfdata: {"model":"up"}\n\n'
    out = splice_event(decode_all(raw)[0][0], [Edit(("model",), "alias")])
    assert out.raw == b'\xef\xbb\xbfdata: {"model":"alias"}\n\n'


# --- examples -------------------------------------------------------------------------------------

CHUNK = (
    b'{"id":"c1","object":"chat.completion.chunk", "model" : "up-model","choices":[{"index":0,'
    b'"delta":{"content":"a \\u2028 \\u003c \\u00e9 \\ud83d\\ude00 \\/ \\"q\\""}}],'
    b'"usage":{"prompt_tokens":123456789012345678901234567890,"x":1.50}}'
)


def test_restamp_keeps_escapes_spacing_and_big_integers() -> None:
    out = splice(CHUNK, [Edit(("model",), "alias")])
    assert out == CHUNK.replace(b'"up-model"', b'"alias"')
    assert json.loads(out)["usage"]["prompt_tokens"] == 123456789012345678901234567890


def test_a_key_inside_a_string_or_a_nested_object_is_not_the_one() -> None:
    text = b'{"note":"\\"model\\":\\"x\\"","meta":{"model":"inner"},"model":"outer"}'
    out = splice(text, [Edit(("model",), "new")])
    assert out == text.replace(b'"outer"', b'"new"')
    assert splice(text, [Edit(("meta", "model"), "n")]) == text.replace(b'"inner"', b'"n"')


def test_a_repeated_key_edits_the_member_parsers_keep() -> None:
    text = b'{"model":"first","m\\u006fdel":"second"}'
    out = splice(text, [Edit(("model",), "x")])
    assert out == b'{"model":"first","m\\u006fdel":"x"}'
    assert splice(text, [Edit(("model",), DELETE)]) == b"{}"


@pytest.mark.parametrize(
    ("text", "edits"),
    [
        (b'{"a":1}', [Edit(("a", "b"), 1)]),  # into a number
        (b'{"a":[1]}', [Edit(("a", 3), 1)]),  # past the end
        (b'{"a":"x}', [Edit(("a",), 2)]),  # a string not closed
        (b'{"a" 1}', [Edit(("a",), 2)]),  # no colon
        (b'{"a":1}', [Edit(("a",), 1), Edit(("a",), 2)]),  # the same value twice
        (b'{"a":{"b":1}}', [Edit(("a",), 1), Edit(("a", "b"), 2)]),  # nested edits
    ],
)
def test_bytes_that_do_not_fit_the_edits_raise(text: bytes, edits: list[Edit]) -> None:
    with pytest.raises(SpliceError):
        splice(text, edits)


def test_new_values_are_written_safely() -> None:
    assert encode("a\u2028b\u2029") == b'"a\\u2028b\\u2029"'
    assert encode("\ud800") == b'"\\ud800"'  # a lone surrogate is not UTF-8
    assert encode("\u00e9<") == '"\u00e9<"'.encode()
    assert encode(10**30) == b"1000000000000000000000000000000"
    assert orjson.loads(encode({"a": [1, None, True, 1.5]})) == {"a": [1, None, True, 1.5]}


def test_values_nested_deeper_than_one_match_skips() -> None:
    deep = b"[" * 12 + b'{"model":"no"}' + b"]" * 12
    text = b'{"deep":' + deep + b',"model":"x","after":' + deep + b"}"
    assert splice(text, [Edit(("model",), "y")]) == text.replace(b'"x"', b'"y"')
    path = ("deep", *([0] * 12), "model")
    assert json.loads(splice(text, [Edit(path, "z")]))["deep"][0][0][0][0][0][0][0][0][0][0][0][0]


def test_events_that_begin_alike_are_spliced_alike() -> None:
    # The scan remembers where the last event's key was; bytes that begin the same way must
    # still give the right span, and a later repeat of the key must still win.
    first = b'{"id":"c","model":"up","choices":[]}'
    assert splice(first, [Edit(("model",), "x")]) == b'{"id":"c","model":"x","choices":[]}'
    later = b'{"id":"c","model":"up","choices":[],"model":"again"}'
    assert (
        splice(later, [Edit(("model",), "x")])
        == b'{"id":"c","model":"up","choices":[],"model":"x"}'
    )
    n1 = b'{"id":"c","model":1,"x":0}'
    assert splice(n1, [Edit(("model",), 5)]) == b'{"id":"c","model":5,"x":0}'
    n2 = b'{"id":"c","model":12}'
    assert splice(n2, [Edit(("model",), 5)]) == b'{"id":"c","model":5}'
    short = b'{"id":"c","model":"u"}'
    assert splice(short, [Edit(("model",), "x")]) == b'{"id":"c","model":"x"}'


def test_a_path_into_a_container_does_not_read_all_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Responses event's ``response`` carries the whole answer: the path to its model enters
    it without reading it to its end (a string value spelled as the key is no key), and each
    other way a member could repeat the key still finds the last one."""
    import mitmllm.protocol.splice as splice_module

    answer = b'"output":[{"content":[{"text":"' + b"x" * 50_000 + b'"}]}]'
    response = b'{"id":"r","object":"response","model":"up",' + answer + b"}"
    text = b'{"type":"response.completed","response":' + response + b',"n":1}'
    read: list[int] = []
    skip = splice_module._skip

    def counting(buf: bytes, pos: int, end: int) -> int:
        after = skip(buf, pos, end)
        read.append(after - pos)
        return after

    monkeypatch.setattr(splice_module, "_skip", counting)
    edit = [Edit(("response", "model"), "alias")]
    assert splice(text, edit) == text.replace(b'"up"', b'"alias"', 1)
    assert locate(text, ("response", "model")) == (text.index(b'"up"'), text.index(b'"up"') + 4)
    assert max(read) < 100  # the model's string only, never the answer
    read.clear()
    for later in (b',"response":', b',"response"\n :', b',"\\u0072esponse":'):
        repeated = text[:-1] + later + b'{"model":"last"}}'
        out = splice(repeated, edit)
        assert out == repeated.replace(b'"last"', b'"alias"')
        assert json.loads(out)["response"] == {"model": "alias"}
    assert max(read) > 50_000  # a member may repeat the key: the scan reads on, as before
