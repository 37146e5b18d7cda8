"""Regression fixtures: one reviewable JSON file per recorded LLM flow.

The file (``format_version`` 1) holds what happened on the wire and what mitmllm must say about it:

* ``request``: method, URL, headers (``[name, value]`` pairs, order and repeats kept), body.
* ``response``: status, headers, the body exactly as the upstream sent it (after de-chunking,
  before any rewrite), and its chunk boundaries as ``[[offset, ms since the request], ...]``.
  ``timing`` is ``"unknown"`` when the flow came from a saved flow file (the tap was gone): the body
  is then one chunk. ``client_body`` is present only when the client was sent different bytes.
* ``error``: mitmproxy's error for a stream that was cut (``response`` is then the part that
  arrived) or a request that got no response at all.
* ``expect``: what replaying the body at its recorded chunking through the pipeline gives: the
  findings ``{rule, severity, event}`` in order, suppressed repeats, the terminal state
  (complete | truncated | aborted | failed), and ``client_body_sha256`` only when the pipeline's
  output is not the upstream body byte for byte.
* ``attempts`` (fail-over), ``marked``, ``comment`` and ``metadata`` as the proxy recorded them;
  ``redacted`` lists every place a secret was removed; ``notes`` say what is approximate.

Bodies that are valid UTF-8 are stored as text, one JSON string per line (split after each LF, so
concatenating them gives the body back and CR/LF survive as JSON escapes); anything else is base64
with ``"encoding": "base64"``. Free-form dicts are written with sorted keys, so a file only changes
where the flow did.

Secrets never reach a file: header values and query parameters named in `SECRET_NAMES` (plus the
names the user adds) become ``<redacted>``, JSON body fields with those names are masked, and every
secret value found that way is also masked wherever else it occurs (bodies, URL, headers, comment,
metadata). Masks inside bodies keep the length, so offsets and chunk boundaries stay valid.

`replay_fixture` is the expectation replay; `check_fixture` compares it with ``expect`` (and with
``MITMLLM_UPDATE_FIXTURES=1`` rewrites ``expect`` and prints the diff). `to_flow` / `from_flow`
convert to and from mitmproxy flows losslessly: fixture-only fields travel in
``flow.metadata["mitmllm_fixture"]``.
"""

from __future__ import annotations

import base64
import copy
import difflib
import hashlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import Literal
from urllib.parse import parse_qsl
from urllib.parse import unquote_plus
from urllib.parse import urlsplit

from mitmproxy import connection
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy import io as mio
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import PrivateAttr
from pydantic import ValidationError
from pydantic import field_validator
from pydantic import model_validator

from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.report import client_gone
from mitmllm.protocol import detect
from mitmllm.protocol.credentials import CREDENTIAL_HEADERS
from mitmllm.protocol.credentials import CREDENTIAL_QUERY
from mitmllm.protocol.detect import Recognised
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.payload import json_text
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.stream import StreamChecker
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_head
from mitmllm.protocol.stream import is_event_stream

FORMAT_VERSION = 1
UPDATE_ENV = "MITMLLM_UPDATE_FIXTURES"
REDACTED = "<redacted>"
#: flow.metadata key holding the fixture-only fields of a flow made by `to_flow`.
EXTRAS_KEY = "mitmllm_fixture"
#: flow.metadata key the recorder sets to the file a flow was recorded to.
CAPTURED_KEY = "mitmllm_captured"
#: keys of flow.metadata["mitmllm"] that a fixture keeps at its top level.
_HOISTED = ("format", "model", "stream", "attempts")

#: Header, query parameter and JSON field names whose values are secrets (compared lower-case).
SECRET_NAMES = (
    CREDENTIAL_HEADERS
    | CREDENTIAL_QUERY
    | {"set-cookie", "x-mitmllm-relay-token", "apikey", "access_token", "client_secret"}
)
# A secret value shorter than this is removed where it was found but not hunted elsewhere: short
# strings occur by chance in bodies, and masking them would corrupt the recording.
MIN_SECRET_LEN = 8

# Characters json.dumps leaves raw that editors and diff tools show as line breaks.
_LINE_BREAKING = re.compile("[\u0085\u2028\u2029]")

Terminal = Literal["complete", "truncated", "aborted", "failed"]


class FixtureError(ValueError):
    """A fixture file that cannot be read; the message names the file and the field."""


# --- the file format ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestRecord(_Model):
    method: str = Field(description="HTTP method")
    url: str = Field(description="full URL, secrets in the query replaced by <redacted>")
    http_version: str = "HTTP/1.1"
    headers: list[tuple[str, str]] = Field(default_factory=list, description="[name, value] pairs")
    body: str | list[str] | None = Field(default=None, description="text (joined lines) or base64")
    encoding: Literal["base64"] | None = None

    @property
    def content(self) -> bytes:
        return decode_body(self.body, self.encoding)


class ResponseRecord(_Model):
    status: int
    reason: str = ""
    http_version: str = "HTTP/1.1"
    headers: list[tuple[str, str]] = Field(default_factory=list)
    headers_ms: float | None = Field(
        default=None, description="response headers, ms since the request"
    )
    timing: Literal["recorded", "unknown"] = "recorded"
    chunks: list[tuple[int, float]] = Field(
        default_factory=list, description="[upstream offset, ms since the request] per chunk"
    )
    body: str | list[str] | None = Field(default=None, description="the upstream body, as received")
    encoding: Literal["base64"] | None = None
    client_body: str | list[str] | None = Field(
        default=None, description="what the client was sent, when it differs from body"
    )
    client_encoding: Literal["base64"] | None = None

    @property
    def content(self) -> bytes:
        return decode_body(self.body, self.encoding)

    @property
    def client_content(self) -> bytes:
        if self.client_body is None:
            return self.content
        return decode_body(self.client_body, self.client_encoding)

    @model_validator(mode="after")
    def _chunks_fit_the_body(self) -> ResponseRecord:
        size = len(self.content)
        offsets = [o for o, _ in self.chunks]
        if offsets and (offsets[0] != 0 or any(b <= a for a, b in itertools.pairwise(offsets))):
            raise ValueError("chunks: offsets must start at 0 and strictly increase")
        if offsets and offsets[-1] >= max(size, 1):
            raise ValueError(f"chunks: offset {offsets[-1]} is past the body ({size} bytes)")
        return self

    def pieces(self) -> list[tuple[bytes, float]]:
        """The body cut at its recorded boundaries, each piece with its arrival time in ms."""
        body = self.content
        if not body:
            return []
        chunks = self.chunks or [(0, self.headers_ms or 0.0)]
        ends = [o for o, _ in chunks[1:]] + [len(body)]
        return [(body[o:end], ms) for (o, ms), end in zip(chunks, ends, strict=True)]


class ExpectedFinding(_Model):
    rule: str
    severity: Severity
    event: int | None = None

    @field_validator("rule")
    @classmethod
    def _registered(cls, rule: str) -> str:
        if rule not in RULES:
            raise ValueError(f"{rule!r} is not a registered rule ID (see protocol/rules.py)")
        return rule


class Expect(_Model):
    terminal: Terminal = "complete"
    findings: list[ExpectedFinding] = Field(default_factory=list)
    suppressed: dict[str, int] = Field(default_factory=dict)
    client_body_sha256: str | None = Field(
        default=None,
        description="sha256 of the pipeline's output, when it is not the upstream body",
    )


class Fixture(_Model):
    format_version: int = FORMAT_VERSION
    format: str | None = None
    model: str | None = None
    stream: bool = False
    repair: bool = Field(
        default=False,
        description="the stream was repaired on its way to the client (mitmllm_repair): "
        "replayed with the repairs",
    )
    time: str | None = Field(default=None, description="request start, ISO 8601 UTC")
    expect: Expect = Field(default_factory=lambda: Expect())
    redacted: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: str | None = None
    attempts: list[Any] | None = None
    marked: str = ""
    comment: str = ""
    request: RequestRecord
    response: ResponseRecord | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    _source: Path | None = PrivateAttr(None)

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != FORMAT_VERSION:
            raise ValueError(f"format_version {v} is not {FORMAT_VERSION}; upgrade mitmllm")
        return v

    def __eq__(self, other: object) -> bool:
        # Where a fixture was loaded from is not part of it.
        if not isinstance(other, Fixture):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    @property
    def source(self) -> Path | None:
        """The file this fixture was loaded from."""
        return self._source

    @property
    def name(self) -> str:
        return self._source.stem if self._source else fixture_name(self)

    def to_json(self) -> str:
        return render(_compact(self.model_dump(mode="json", exclude_none=True)))


# Keys of these dicts are dropped when empty; free-form values (metadata, attempts) are kept as is.
_OPTIONAL = {
    "redacted",
    "notes",
    "marked",
    "comment",
    "metadata",
    "suppressed",
    "headers",
    "chunks",
    "reason",
    "body",
}


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    def prune(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if not (k in _OPTIONAL and v in ("", [], {}))}

    out = prune(data)
    if not out.get("repair", True):
        del out["repair"]  # written only where it matters
    for key in ("request", "response", "expect"):
        if isinstance(out.get(key), dict):
            out[key] = prune(out[key])
    for key in ("metadata", "attempts"):
        if key in out:
            out[key] = _sorted(out[key])
    return out


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


# --- bodies ---------------------------------------------------------------------------------------


def encode_body(data: bytes) -> tuple[str | list[str], Literal["base64"] | None]:
    """(body, encoding) for a file: lines of text, or base64 lines for anything not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        b64 = base64.b64encode(data).decode("ascii")
        parts = [b64[i : i + 76] for i in range(0, len(b64), 76)]
        return (parts if len(parts) > 1 else b64), "base64"
    lines = _LINES.findall(text)  # one pass, no intermediate list of parts
    return (lines if len(lines) > 1 else text), None


_LINES = re.compile(r"[^\n]*\n|[^\n]+\Z")


def decode_body(body: str | list[str] | None, encoding: str | None) -> bytes:
    if body is None:
        return b""
    text = body if isinstance(body, str) else "".join(body)
    if encoding == "base64":
        return base64.b64decode(text, validate=True)
    return text.encode("utf-8")


# --- the JSON writer -----------------------------------------------------------------------------

_WIDTH = 96


def render(data: Any) -> str:
    """Stable JSON: 2-space indent, short lists and dicts of scalars on one line, final newline."""
    return _render(data, 0) + "\n"


def _render(value: Any, level: int) -> str:
    pad = "  " * level
    if isinstance(value, dict):
        if not value:
            return "{}"
        if all(_is_scalar(v) for v in value.values()):
            inline = "{" + ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in value.items()) + "}"
            if len(inline) + len(pad) <= _WIDTH:
                return inline
        items = [f"{pad}  {_scalar(k)}: {_render(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        # Pairs (headers, chunks) and short lists of numbers on one line; text one item a line.
        if all(_is_scalar(v) for v in value):
            inline = "[" + ", ".join(_scalar(v) for v in value) + "]"
            texts = any(isinstance(v, str) for v in value)
            if len(value) <= 2 or (not texts and len(inline) + len(pad) <= _WIDTH):
                return inline
        items = [f"{pad}  {_render(v, level + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return _scalar(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _scalar(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return _LINE_BREAKING.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- files ----------------------------------------------------------------------------------------


def load_fixture(path: str | Path) -> Fixture:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FixtureError(f"{path}: cannot read: {e}") from e
    fixture = parse_fixture(text, str(path))
    fixture._source = path
    return fixture


def parse_fixture(text: str, source: str = "<string>") -> Fixture:
    """A fixture from the text of a file; errors name `source`, the line or the field path."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FixtureError(f"{source}:{e.lineno}:{e.colno}: not JSON: {e.msg}") from e
    try:
        return Fixture.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: not a mitmllm fixture:"]
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(file)"
            lines.append(f"  {where}: {err['msg']}")
        raise FixtureError("\n".join(lines)) from e


def save_fixture(fixture: Fixture, path: str | Path) -> Path:
    """Write `fixture` to `path`, replacing what is there (see `write_new` to never replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fixture.to_json(), encoding="utf-8")
    fixture._source = path
    return path


def write_new(directory: str | Path, fixture: Fixture) -> Path:
    """Write `fixture` under its stable name in `directory`.

    An identical file already there is left alone; a different one is never replaced: the new
    fixture gets the next free ``-2``, ``-3``... name.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = fixture.to_json()
    base = fixture_name(fixture)
    for n in itertools.count(1):
        path = directory / (f"{base}.json" if n == 1 else f"{base}-{n}.json")
        try:
            with path.open("x", encoding="utf-8") as fh:
                fh.write(text)
        except FileExistsError:
            if path.read_text(encoding="utf-8") == text:
                break
            continue
        break
    fixture._source = path
    return path


def iter_fixtures(root: str | Path) -> list[Path]:
    """Every fixture file under `root` (a file or a folder), sorted; hidden folders skipped."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*.json")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def fixture_name(fixture: Fixture) -> str:
    """``format--model--first rule--hash``: readable, and stable for the same exchange."""
    first = _first_rule(fixture.expect)
    if first is None:
        first = "ok" if fixture.expect.terminal == "complete" else fixture.expect.terminal
    return (
        "--".join((_slug(fixture.format or "http"), _slug(fixture.model or "no-model"), first))
        + f"--{content_hash(fixture)[:6]}"
    )


def content_hash(fixture: Fixture) -> str:
    """sha256 of the exchange: request (without scheme, host and port, which differ between a
    recording and its replay), upstream response and error; not of timing or expectations."""
    h = hashlib.sha256()
    req = fixture.request
    parts = urlsplit(req.url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    for part in (req.method.encode(), target.encode(), req.content):
        h.update(len(part).to_bytes(8, "big") + part)
    if fixture.response is not None:
        h.update(str(fixture.response.status).encode() + fixture.response.content)
    h.update((fixture.error or "").encode())
    return h.hexdigest()


def _first_rule(expect: Expect) -> str | None:
    """The first finding of the worst severity (the rule a flow's comment leads with)."""
    if not expect.findings:
        return None
    worst = max(f.severity.rank for f in expect.findings)
    return next(f.rule for f in expect.findings if f.severity.rank == worst)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "x"


# --- redaction ------------------------------------------------------------------------------------


def redact(fixture: Fixture, extra: Iterable[str] = (), *, known: Iterable[str] = ()) -> Fixture:
    """A copy of `fixture` with every secret removed, and where it was listed in ``redacted``.

    `extra` adds header, query parameter and JSON field names to `SECRET_NAMES`; `known` adds
    secret values to hunt everywhere (the upstreams' own keys, which no header of the flow
    carries, but an upstream's error message may echo).
    """
    return _redact(fixture.model_copy(deep=True), extra, known)


def _redact(fx: Fixture, extra: Iterable[str], known: Iterable[str]) -> Fixture:
    """`redact` in place (for a fixture nobody else holds: no copy of a long body)."""
    names = SECRET_NAMES | {n.strip().lower() for n in extra if n.strip()}
    found: set[str] = set()
    secrets: set[str] = {s for s in known if s and not _masked(s)}

    def headers(pairs: list[tuple[str, str]], where: str) -> list[tuple[str, str]]:
        out = []
        for k, v in pairs:
            if k.lower() in names and not _masked(v):
                found.add(f"{where}.headers.{k.lower()}")
                secrets.update(_secret_parts(v))
                v = REDACTED
            out.append((k, v))
        return out

    fx.request.headers = headers(fx.request.headers, "request")
    if fx.response is not None:
        fx.response.headers = headers(fx.response.headers, "response")
    fx.request.url = _redact_query(fx.request.url, names, found, secrets)

    # Bodies are decoded once and stored again only if a mask changed them (a long body is
    # then held once or twice, not four times).
    req_original = fx.request.content
    req_body = _redact_json_fields(req_original, names, "request.body", found, secrets)
    resp = fx.response
    resp_original = resp.content if resp is not None else b""
    if resp is not None and not is_event_stream(_header(resp.headers, "content-type")):
        resp_body = _redact_json_fields(resp_original, names, "response.body", found, secrets)
    else:
        resp_body = resp_original

    # Every secret value, wherever else it shows up.
    hunted = sorted((s for s in secrets if len(s) >= MIN_SECRET_LEN), key=len, reverse=True)
    if hunted:
        req_body = _mask_bytes(req_body, hunted, "request.body", found)
        resp_body = _mask_bytes(resp_body, hunted, "response.body", found)
        fx.request.url = _mask_text(fx.request.url, hunted, "request.url", found)
        for rec, where in ((fx.request, "request"), (fx.response, "response")):
            if rec is not None:
                rec.headers = [
                    (k, _mask_text(v, hunted, f"{where}.headers.{k.lower()}", found))
                    for k, v in rec.headers
                ]
        fx.comment = _mask_text(fx.comment, hunted, "comment", found)
        fx.error = _mask_text(fx.error, hunted, "error", found) if fx.error else fx.error
        fx.metadata = _mask_tree(fx.metadata, hunted, "metadata", found)
        if fx.attempts is not None:
            fx.attempts = _mask_tree(fx.attempts, hunted, "attempts", found)
        fx.notes = [_mask_text(n, hunted, "notes", found) for n in fx.notes]
    if req_body is not req_original:
        fx.request.body, fx.request.encoding = _stored(req_body)
    del req_original
    if fx.response is not None:
        if resp_body is not resp_original:
            fx.response.body, fx.response.encoding = _stored(resp_body)
        del resp_original, resp_body
        if fx.response.client_body is not None and hunted:
            client = fx.response.client_content
            masked = _mask_bytes(client, hunted, "response.client_body", found)
            if masked is not client:
                fx.response.client_body, fx.response.client_encoding = _stored(masked)
    fx.redacted = sorted(set(fx.redacted) | found)
    return fx


def _stored(data: bytes) -> tuple[str | list[str] | None, Literal["base64"] | None]:
    return encode_body(data) if data else (None, None)


def _secret_parts(value: str) -> set[str]:
    """The value, its last word (``Bearer <token>``) and each ``name=value`` item's value."""
    parts = {value.strip()}
    words = value.split()
    if words:
        parts.add(words[-1])
    for item in re.split(r"[;,]", value):
        if "=" in item:
            parts.add(item.split("=", 1)[1].strip())
    return {p for p in parts if not _masked(p)}


def _masked(value: str) -> bool:
    """Already redacted (by an earlier pass): empty, the marker, or a mask of stars."""
    return not value.strip("*") or value == REDACTED


def _redact_query(url: str, names: frozenset[str], found: set[str], secrets: set[str]) -> str:
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hsep, fragment = rest.partition("#")
    items = query.split("&")
    for i, item in enumerate(items):
        key, eq, value = item.partition("=")
        if eq and unquote_plus(key).lower() in names and not _masked(value):
            found.add(f"request.query.{unquote_plus(key).lower()}")
            secrets.update({value, unquote_plus(value)} - {""})
            items[i] = f"{key}={REDACTED}"
    return base + "?" + "&".join(items) + hsep + fragment


def _redact_json_fields(
    body: bytes, names: frozenset[str], where: str, found: set[str], secrets: set[str]
) -> bytes:
    """Mask the string values of secret-named fields of a JSON body, keeping every other byte."""
    if not body or body[:1].strip() not in (b"{", b"["):
        return body
    value, _ = parse_json(body)
    if not isinstance(value, dict | list):
        return body
    values: set[str] = set()

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                sub = f"{path}.{k}"
                if str(k).lower() in names and isinstance(v, str) and not _masked(v):
                    found.add(sub)
                    values.add(v)
                else:
                    walk(v, sub)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}.{i}")

    walk(value, where)
    secrets.update(values)
    for v in sorted(values, key=len, reverse=True):
        # as escaped ASCII and as raw UTF-8 (orjson's, unless UTF-8 has no bytes for it)
        for quoted in {json.dumps(v).encode(), json_text(v).encode()}:
            body = body.replace(quoted, b'"' + b"*" * (len(quoted) - 2) + b'"')
    return body


def _mask_bytes(data: bytes, secrets: Sequence[str], where: str, found: set[str]) -> bytes:
    for s in secrets:
        try:
            raw = s.encode("utf-8")
        except UnicodeEncodeError:  # half a surrogate pair: no bytes can hold it raw
            continue
        if raw in data:
            found.add(where)
            data = data.replace(raw, b"*" * len(raw))
    return data


def _mask_text(text: str, secrets: Sequence[str], where: str, found: set[str]) -> str:
    for s in secrets:
        if s in text:
            found.add(where)
            text = text.replace(s, REDACTED)
    return text


def _mask_tree(value: Any, secrets: Sequence[str], where: str, found: set[str]) -> Any:
    if isinstance(value, str):
        return _mask_text(value, secrets, where, found)
    if isinstance(value, dict):
        return {
            _mask_text(str(k), secrets, where, found): _mask_tree(v, secrets, where, found)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_tree(v, secrets, where, found) for v in value]
    return value


def _header(pairs: Iterable[tuple[str, str]], name: str) -> str:
    return next((v for k, v in pairs if k.lower() == name), "")


# --- expectation replay ---------------------------------------------------------------------------


@dataclass
class Result:
    """What replaying a fixture's response through the pipeline gave."""

    findings: Findings
    client_body: bytes
    terminal: Terminal
    events: int = 0

    def expectation(self, upstream_body: bytes) -> Expect:
        return Expect(
            terminal=self.terminal,
            findings=[
                ExpectedFinding(rule=f.rule, severity=f.severity, event=f.event)
                for f in self.findings
            ],
            suppressed=dict(sorted(self.findings.suppressed.items())),
            client_body_sha256=None
            if self.client_body == upstream_body
            else hashlib.sha256(self.client_body).hexdigest(),
        )


def recognise(method: str, url_or_path: str, body: bytes) -> Recognised:
    """Recognise an LLM request the way the inspector does (path, then body shape)."""
    path, query = split_url(url_or_path)
    return detect.recognise(method, path, query, body)


def split_url(url_or_path: str) -> tuple[str, dict[str, str]]:
    """(path, query) of a URL or of a path with a query."""
    parts = urlsplit(url_or_path if "://" in url_or_path else "http://x" + url_or_path)
    return parts.path or "/", dict(parse_qsl(parts.query, keep_blank_values=True))


#: The most bytes `replay_fixture` feeds the pipeline at once.
FEED = 64 * 1024


def replay_fixture(fixture: Fixture) -> Result:
    """Run the fixture's upstream response through the pipeline at its recorded chunking.

    Mirrors the inspector: the head is checked, an event stream goes through
    `Pipeline(StreamChecker(...))` piece by piece and is closed (for a cut stream the closing only
    runs the end-of-stream checks; its held bytes never reached the client), and any other body
    through `check_body`. A flow that is not an LLM call is not validated.
    """
    findings = Findings()
    resp = fixture.response
    if resp is None:
        return Result(findings, b"", "failed")
    body = resp.content
    req = recognise(fixture.request.method, fixture.request.url, fixture.request.content)
    if not req.llm:
        return Result(findings, body, _terminal(fixture, findings, None, stream=False))
    headers = http.Headers([(k.encode(), v.encode()) for k, v in resp.headers])
    check_head(findings, status=resp.status, headers=headers, wants_stream=req.stream)
    ctype = headers.get("content-type")
    if not is_event_stream(ctype):
        check_body(
            req.dialect,
            findings,
            status=resp.status,
            body=body,
            content_type=ctype,
            request=req.body,
        )
        return Result(findings, body, _terminal(fixture, findings, None, stream=False))
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        findings.add("TAP-2", f"event stream is {encoding}-encoded; passed through unvalidated")
        return Result(findings, body, _terminal(fixture, findings, None, stream=False))
    checker = StreamChecker(req.dialect, findings, request=req.body, autodetect=req.autodetect)
    if fixture.repair:  # findings of what the upstream sent, with the repairs; the client's bytes
        client = StreamChecker(req.dialect, request=req.body, autodetect=req.autodetect)
        repairer = Repairer(req.dialect, findings, request=req.body)
        pipeline = Pipeline(client, upstream=checker, repairer=repairer)
    else:
        pipeline = Pipeline(checker)
    # Fed at most FEED bytes at a time: a body recorded as one piece (timing unknown) would
    # otherwise be parsed into all its events at once. The chunking changes no finding.
    out = [
        pipeline.feed(piece[i : i + FEED])
        for piece, _ in resp.pieces()
        for i in range(0, len(piece), FEED)
    ]
    # A stream the upstream cut is checked for truncation like the live inspector does, but
    # not one the client walked away from: that says nothing about the upstream.
    if not client_gone(fixture.error):
        tail = pipeline.close()
        if fixture.error is None:  # what the tap still held never reached the client
            out.append(tail)
    return Result(
        findings,
        b"".join(out),
        _terminal(fixture, findings, pipeline.checker, stream=True),
        pipeline.events,
    )


def _terminal(
    fixture: Fixture, findings: Findings, checker: StreamChecker | None, *, stream: bool
) -> Terminal:
    resp = fixture.response
    if resp is None or resp.status >= 400 or findings.count("HTTP-5"):
        return "failed"
    validator = checker.validator if checker is not None else None
    if validator is not None and validator.error:
        return "failed"
    if fixture.error is not None:
        # A client may close as soon as the terminal event is in (the OpenAI SDKs do).
        complete = validator is not None and validator.complete
        return "complete" if complete and client_gone(fixture.error) else "aborted"
    if not stream:
        return "complete"
    if validator is not None:
        return "complete" if validator.complete else "truncated"
    return "truncated" if findings.count("SSE-14") or findings.count("SSE-15") else "complete"


# --- checking and updating ------------------------------------------------------------------------


def update_requested() -> bool:
    """Is the update switch (``MITMLLM_UPDATE_FIXTURES=1``) on?"""
    return os.environ.get(UPDATE_ENV, "").strip().lower() in ("1", "true", "yes")


def refreshed(fixture: Fixture) -> tuple[Fixture, str]:
    """The fixture with expectations from a fresh replay, and the unified diff ('' if none)."""
    result = replay_fixture(fixture)
    new = fixture.model_copy(update={"expect": result.expectation(_upstream(fixture))})
    new._source = fixture._source
    if new.expect == fixture.expect:
        return fixture, ""
    name = str(fixture.source or fixture_name(fixture))
    diff = "".join(
        difflib.unified_diff(
            fixture.to_json().splitlines(keepends=True),
            new.to_json().splitlines(keepends=True),
            fromfile=f"{name} (expected)",
            tofile=f"{name} (replayed)",
        )
    )
    if result.client_body != _upstream(fixture) and fixture.expect.client_body_sha256 is None:
        diff += _first_difference(_upstream(fixture), result.client_body)
    return new, diff


def _upstream(fixture: Fixture) -> bytes:
    return fixture.response.content if fixture.response is not None else b""


def _first_difference(expected: bytes, actual: bytes) -> str:
    n = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    return (
        f"client bytes differ from the upstream body at offset {n}: "
        f"expected {expected[n : n + 40]!r}, got {actual[n : n + 40]!r} "
        f"({len(expected)} vs {len(actual)} bytes)\n"
    )


def check_fixture(path: str | Path, update: bool | None = None) -> str:
    """Replay the fixture at `path` and compare with its expectations.

    Raises AssertionError with a unified diff when they differ. With `update` (default: the
    ``MITMLLM_UPDATE_FIXTURES`` switch) the file's expectations are rewritten instead and the diff
    is printed. Returns the diff ('' when nothing changed).
    """
    if update is None:
        update = update_requested()
    fixture = load_fixture(path)
    new, diff = refreshed(fixture)
    if not diff:
        return ""
    if update:
        save_fixture(new, path)
        print(diff, file=sys.stderr)
        return diff
    raise AssertionError(
        f"{path}: replaying the recorded response no longer gives the expected findings or "
        f"bytes.\n{diff}\nIf the change is intended, run with {UPDATE_ENV}=1 "
        f"(or: python -m mitmllm.fixtures_cli update {path})."
    )


# --- mitmproxy flows ------------------------------------------------------------------------------


def from_flow(
    flow: http.HTTPFlow,
    *,
    upstream_body: bytes | None = None,
    chunks: Sequence[tuple[int, float]] | None = None,
    redact_names: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> Fixture:
    """A redacted fixture for `flow` (`secrets`: more values to hunt, see `redact`).

    `upstream_body` and `chunks` come from a live flow's tap (the bytes the upstream sent and when
    each chunk arrived). Without them the flow's stored body is used as one chunk, and a note
    says so. A flow made by `to_flow` carries its fixture-only fields and comes back unchanged.
    """
    extras = flow.metadata.get(EXTRAS_KEY)
    extras = extras if isinstance(extras, dict) else {}
    metadata = {
        k: _plain(v) for k, v in flow.metadata.items() if k not in (EXTRAS_KEY, CAPTURED_KEY)
    }
    ours = metadata.get("mitmllm")
    hoisted = {}
    if isinstance(ours, dict):
        ours = dict(ours)
        hoisted = {k: ours.pop(k) for k in _HOISTED if k in ours}
        if ours:
            metadata["mitmllm"] = ours
        else:
            del metadata["mitmllm"]
    req = flow.request
    req_body = req.raw_content or b""
    notes: list[str] = list(extras.get("notes", []))
    if "format" in hoisted or "stream" in hoisted:
        fmt, model, stream = hoisted.get("format"), hoisted.get("model"), hoisted.get("stream")
    else:
        seen = recognise(req.method, req.path, req_body)
        fmt = seen.dialect.name if seen.dialect else None
        model, stream = seen.model, seen.stream
    t0 = req.timestamp_start
    fixture = Fixture(
        format=fmt,
        model=model,
        stream=bool(stream),
        repair=bool(extras["repair"]) if "repair" in extras else _repaired(metadata),
        time=extras.get("time") or _iso(t0),
        error=flow.error.msg if flow.error else None,
        attempts=hoisted.get("attempts"),
        marked=flow.marked or "",
        comment=flow.comment or "",
        request=RequestRecord(
            method=req.method,
            url=req.url,
            http_version=req.http_version,
            headers=_pairs(req.headers),
            body=None,
        ),
        metadata=metadata,
    )
    fixture.request.body, fixture.request.encoding = _stored(req_body)
    if flow.response is not None:
        fixture.response = _response_record(flow, extras, upstream_body, chunks, notes)
    fixture.notes = notes
    if extras:
        fixture.redacted = list(extras.get("redacted", []))
        fixture.expect = Expect.model_validate(extras.get("expect", {}))
        return _redact(fixture, redact_names, secrets)
    fixture = _redact(fixture, redact_names, secrets)
    fixture.expect = replay_fixture(fixture).expectation(_upstream(fixture))
    return fixture


def _repaired(metadata: dict[str, Any]) -> bool:
    """Did mitmllm repair the flow's stream on its way to the client (in the tap)?"""
    ours = metadata.get("mitmllm")
    return isinstance(ours, dict) and "client" in ours


def _response_record(
    flow: http.HTTPFlow,
    extras: dict[str, Any],
    upstream_body: bytes | None,
    chunks: Sequence[tuple[int, float]] | None,
    notes: list[str],
) -> ResponseRecord:
    resp = flow.response
    assert resp is not None
    t0 = flow.request.timestamp_start
    shown = resp.raw_content
    headers_ms = extras.get("headers_ms")
    if headers_ms is None and resp.timestamp_start and t0 and not extras:
        headers_ms = round((resp.timestamp_start - t0) * 1000, 3)
    rec = ResponseRecord(
        status=resp.status_code,
        reason=resp.reason,
        http_version=resp.http_version,
        headers=_pairs(resp.headers),
        headers_ms=headers_ms,
    )
    if "body" in extras:
        body = decode_body(extras["body"], extras.get("encoding"))
    elif upstream_body is not None:
        body = upstream_body
    else:
        body = shown or b""
        if shown is None:
            notes.append("the response body was not stored with the flow")
    client = shown if shown is not None and shown != body else None
    rec.body, rec.encoding = _stored(body)
    if client is not None:
        rec.client_body, rec.client_encoding = encode_body(client)
    given = extras.get("chunks") if extras else chunks
    usable = [(int(o), float(ms)) for o, ms in given or []]
    if usable and _fits(usable, len(body)):
        rec.chunks = usable
        rec.timing = extras.get("timing", "recorded") if extras else "recorded"
    elif extras and not given:
        rec.timing = extras.get("timing", "recorded")
    elif body:
        end = resp.timestamp_end
        ms = round((end - t0) * 1000, 3) if end and t0 and not extras else headers_ms or 0.0
        rec.chunks = [(0, float(ms))]
        rec.timing = "unknown"
        if not any(n.startswith("chunk timing unknown") for n in notes):
            notes.append(
                "chunk timing unknown (recorded from a stored flow): the body is one chunk"
            )
    return rec


def _fits(chunks: Sequence[tuple[int, float]], size: int) -> bool:
    offsets = [o for o, _ in chunks]
    return (
        offsets[0] == 0
        and all(b > a for a, b in itertools.pairwise(offsets))
        and offsets[-1] < size
    )


def _pairs(headers: http.Headers) -> list[tuple[str, str]]:
    return [(k.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for k, v in headers.fields]


def _plain(value: Any) -> Any:
    """JSON-like data for a file (flow metadata may hold bytes and tuples)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(iso: str | None) -> float:
    if not iso:
        return time.time()
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def to_flow(fixture: Fixture) -> http.HTTPFlow:
    """A mitmproxy flow showing the fixture: the body the client got, marks, comment, metadata."""
    t0 = _timestamp(fixture.time)
    req = http.Request.make(fixture.request.method, fixture.request.url)
    req.headers = http.Headers([(k.encode(), v.encode()) for k, v in fixture.request.headers])
    req.http_version = fixture.request.http_version
    req.raw_content = fixture.request.content
    req.timestamp_start = req.timestamp_end = t0
    client = connection.Client(
        peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0), timestamp_start=t0
    )
    server = connection.Server(address=(req.host, req.port))
    flow = http.HTTPFlow(client, server)
    flow.request = req
    extras: dict[str, Any] = {
        "format_version": fixture.format_version,
        "time": fixture.time,
        "expect": fixture.expect.model_dump(mode="json", exclude_none=True),
        "redacted": list(fixture.redacted),
        "notes": list(fixture.notes),
    }
    resp = fixture.response
    if resp is not None:
        last_ms = resp.chunks[-1][1] if resp.chunks else resp.headers_ms or 0.0
        response = http.Response.make(resp.status)
        response.headers = http.Headers([(k.encode(), v.encode()) for k, v in resp.headers])
        response.reason = resp.reason
        response.http_version = resp.http_version
        response.raw_content = resp.client_content
        response.timestamp_start = t0 + (resp.headers_ms or 0.0) / 1000
        response.timestamp_end = t0 + last_ms / 1000
        flow.response = response
        extras.update(
            headers_ms=resp.headers_ms,
            timing=resp.timing,
            chunks=[list(c) for c in resp.chunks],
        )
        if resp.client_body is not None:
            extras.update(body=resp.body, encoding=resp.encoding)
    if fixture.error is not None:
        flow.error = mflow.Error(fixture.error, t0)
    flow.marked = fixture.marked
    flow.comment = fixture.comment
    metadata = copy.deepcopy(fixture.metadata)
    ours = dict(metadata.get("mitmllm") or {})
    ours.update(format=fixture.format, model=fixture.model, stream=fixture.stream)
    if fixture.attempts is not None:
        ours["attempts"] = copy.deepcopy(fixture.attempts)
    metadata["mitmllm"] = ours
    if fixture.repair:
        extras["repair"] = True
    metadata[EXTRAS_KEY] = {k: v for k, v in extras.items() if v is not None}
    flow.metadata = metadata
    return flow


def fixtures_to_flows(paths: Iterable[str | Path], out_file: str | Path) -> int:
    """Write every fixture under `paths` into one mitmproxy flow file; returns how many."""
    n = 0
    with open(out_file, "wb") as fh:
        writer = mio.FlowWriter(fh)
        for path in _expand(paths):
            writer.add(to_flow(load_fixture(path)))
            n += 1
    return n


def read_flows(flow_file: str | Path) -> Iterator[http.HTTPFlow]:
    with open(flow_file, "rb") as fh:
        for f in mio.FlowReader(fh).stream():
            if isinstance(f, http.HTTPFlow):
                yield f


def is_llm_flow(flow: http.HTTPFlow) -> bool:
    """Did mitmllm see this flow as an LLM call (or would it)?"""
    if "mitmllm" in flow.metadata or EXTRAS_KEY in flow.metadata:
        return True
    return recognise(flow.request.method, flow.request.path, flow.request.raw_content or b"").llm


def flows_to_fixtures(
    flow_file: str | Path,
    out_dir: str | Path,
    *,
    redact_names: Iterable[str] = (),
    all_flows: bool = False,
) -> list[Path]:
    """Write a fixture for each LLM flow in a mitmproxy flow file (every flow with `all_flows`)."""
    names = tuple(redact_names)
    return [
        write_new(out_dir, from_flow(f, redact_names=names))
        for f in read_flows(flow_file)
        if all_flows or is_llm_flow(f)
    ]


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(iter_fixtures(p))
    return out
