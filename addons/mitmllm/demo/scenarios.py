"""The demo's scenarios: what each request asks the mock upstreams to do, and why.

Every row names a wire format and a mock scenario (`mitmllm.mock.SCENARIOS`). The primary mock
picks the scenario from a ``~NAME`` suffix on the requested model; the fallback mock gets the
model the route maps it to, which has no suffix, so it always answers healthily.

Four groups, in the order the demo runs them:

* **healthy**: one clean stream per format and a few legal but unusual framings (split UTF-8,
  CRLF), passed through and validated;
* **broken**: streams broken on purpose, sent straight to the primary (no route): the client gets
  the upstream's bytes unchanged, and mitmllm flags the flow with the rules they break;
* **repair**: routed like fail-over, broken in ways a repair mends: the primary serves, and the
  client gets the mended stream, next to
* **fail-over**: routed through the relay (the model ends in ``-failover``): a failure before the
  first content event moves to the fallback unseen, a failure after it ends the stream with the
  format's own error event; one row falls back to an upstream of another wire format (the model
  ends in ``-translate``), which serves the client through translation;
* **rewrite**: a model alias and a tool schema the configuration's model rules rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum

from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import HEADER_STALL
from mitmllm.mock.scenarios import MODEL_SUFFIX
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES

#: The model each format's requests ask for; the suffixes below pick scenario and route.
BASE_MODEL: dict[str, str] = {
    ANTHROPIC: "claude-demo",
    OPENAI_CHAT: "gpt-demo",
    OPENAI_RESPONSES: "gpt-demo",
    GEMINI: "gemini-demo",
}
SHORT_FORMAT: dict[str, str] = {
    ANTHROPIC: "anthropic",
    OPENAI_CHAT: "chat",
    OPENAI_RESPONSES: "responses",
    GEMINI: "gemini",
}
#: Models ending so are routed through the fail-over relay (see `mitmllm.demo.config`).
FAILOVER_SUFFIX = "-failover"
#: ... and these through a route whose fallback speaks another wire format.
TRANSLATE_SUFFIX = "-translate"
#: The fallback hop maps every routed model to this one (no scenario suffix: healthy).
FALLBACK_MODEL_SUFFIX = "-fallback"

#: The model alias row: the client asks for ALIAS_FROM, the upstream is sent ALIAS_TO.
ALIAS_FROM = "claude-demo-alias"
ALIAS_TO = "claude-demo-target"
#: The tool schema row: a model rule with the `openai` tool flavour matches this model.
TOOLS_MODEL = "gpt-demo-tools"
#: Longer than OpenAI's 64-character limit on tool names, so the flavour renames it.
LONG_TOOL_NAME = "search_the_company_knowledge_base_for_documents_matching_the_user_query"

#: A stall far longer than the route's first-event and idle timeouts.
STALL_MS = 5000

#: The request header that ties a saved flow to its row (and the mock's record of an unrouted
#: request: the relay does not forward mitmllm's own x-mitmllm-* headers upstream).
ROW_HEADER = "x-mitmllm-demo-row"


class Group(StrEnum):
    HEALTHY = "healthy"
    BROKEN = "broken"
    REPAIR = "repair"
    FAILOVER = "fail-over"
    REWRITE = "rewrite"

    @property
    def note(self) -> str:
        """What the group shows, for the table's group headings."""
        return _NOTES[self]


_NOTES = {
    Group.HEALTHY: "valid streams, some framed in unusual but legal ways: passed through and "
    "validated",
    Group.BROKEN: "sent straight to the primary: the client gets its bytes unchanged, "
    "mitmllm flags the flow",
    Group.REPAIR: "routed: the same kinds of breakage, mended on the way, so the primary "
    "serves a stream the client's SDK reads",
    Group.FAILOVER: "routed: a failure before the first content event moves to the fallback "
    "unseen; after it, the stream ends with an error event",
    Group.REWRITE: "the configuration's model rules rewrite the request and restore the answer",
}


@dataclass(frozen=True, slots=True)
class Row:
    """One request of the demo."""

    group: Group
    fmt: str
    scenario: str  # the mock scenario the primary plays
    did: str  # what the upstream did, in a few words
    quick: bool = False  # part of the --quick subset
    served_by: str = "primary"  # the mock that should answer
    label: str = ""  # the row's name when it is not the scenario's
    model: str = ""  # the model to ask for when it is not derived from the scenario
    headers: dict[str, str] = field(default_factory=dict)
    #: the wire format of the route's fallback, when it is not the client's (it translates)
    fallback_fmt: str = ""

    @property
    def name(self) -> str:
        return self.label or self.scenario

    @property
    def key(self) -> str:
        """Unique per row: `name` in `format`."""
        return f"{SHORT_FORMAT[self.fmt]} {self.name}"

    @property
    def routed(self) -> bool:
        return self.group in (Group.FAILOVER, Group.REPAIR)

    @property
    def fallback_format(self) -> str:
        return self.fallback_fmt or self.fmt

    @property
    def request_model(self) -> str:
        if self.model:
            return self.model
        suffix = ""
        if self.routed:
            suffix = TRANSLATE_SUFFIX if self.fallback_fmt else FAILOVER_SUFFIX
        return f"{BASE_MODEL[self.fmt]}{suffix}{MODEL_SUFFIX}{self.scenario}"


def _healthy(
    fmt: str, scenario: str = "healthy", did: str = "a short text answer", *, quick: bool = False
) -> Row:
    return Row(Group.HEALTHY, fmt, scenario, did, quick=quick)


def _broken(fmt: str, scenario: str, did: str, *, quick: bool = False) -> Row:
    return Row(Group.BROKEN, fmt, scenario, did, quick=quick)


def _repair(fmt: str, scenario: str, did: str, *, quick: bool = False, label: str = "") -> Row:
    return Row(Group.REPAIR, fmt, scenario, did, quick, "primary", label or f"{scenario} fixed")


def _failover(
    fmt: str, scenario: str, did: str, *, served_by: str = "fallback", quick: bool = False
) -> Row:
    stall = {HEADER_STALL: str(STALL_MS)} if scenario.startswith("stall") else {}
    return Row(Group.FAILOVER, fmt, scenario, did, quick, served_by, headers=stall)


ROWS: tuple[Row, ...] = (
    _healthy(ANTHROPIC, quick=True),
    _healthy(OPENAI_CHAT),
    _healthy(OPENAI_RESPONSES),
    _healthy(GEMINI),
    _healthy(ANTHROPIC, "split-utf8", "multi-byte characters split in two"),
    _healthy(GEMINI, "split-utf8", "multi-byte characters split in two"),
    _healthy(OPENAI_CHAT, "crlf", "CRLF line endings"),
    _healthy(OPENAI_RESPONSES, "crlf", "CRLF line endings"),
    _broken(ANTHROPIC, "keepalive-mid-event", "keep-alive between event: and data:"),
    _broken(OPENAI_RESPONSES, "keepalive-mid-event", "keep-alive between event: and data:"),
    _broken(OPENAI_CHAT, "keepalive-mid-data", "keep-alive inside a data: line"),
    _broken(ANTHROPIC, "tool-index-1", "tool_use block at index 1, none at 0", quick=True),
    _broken(OPENAI_CHAT, "tool-index-1", "tool call at index 1, none at 0"),
    _broken(ANTHROPIC, "double-start", "a second message_start mid-stream"),
    _broken(OPENAI_RESPONSES, "double-start", "a second response.created mid-stream"),
    _broken(OPENAI_CHAT, "comment-only", "only ': PROCESSING' comments"),
    _broken(GEMINI, "comment-only", "only ': PROCESSING' comments"),
    _broken(OPENAI_CHAT, "done-only", "only data: [DONE]"),
    _broken(OPENAI_CHAT, "missing-done", "a whole stream without [DONE]"),
    _broken(ANTHROPIC, "truncated", "ends cleanly before message_stop", quick=True),
    _broken(OPENAI_RESPONSES, "truncated", "ends before response.completed"),
    _broken(GEMINI, "truncated", "ends before the finishReason chunk"),
    _broken(ANTHROPIC, "inband-error", "text, then an overloaded_error event"),
    _broken(OPENAI_CHAT, "inband-error", "text, then an error chunk and [DONE]"),
    _broken(ANTHROPIC, "no-final-blank", "last event without its blank line"),
    _broken(OPENAI_CHAT, "no-final-blank", "last event without its blank line"),
    _broken(ANTHROPIC, "drop", "text, then the connection closes"),
    _repair(ANTHROPIC, "keepalive-race", "a keep-alive spliced into every event", quick=True),
    _repair(
        GEMINI, "keepalive-mid-data", "keep-alive inside a data: line", label="keepalive fixed"
    ),
    _repair(ANTHROPIC, "tool-index-1", "tool_use block at index 1, none at 0"),
    _repair(OPENAI_CHAT, "tool-index-1", "tool call at index 1, none at 0"),
    _repair(ANTHROPIC, "truncated", "ends after message_delta, before message_stop"),
    _repair(OPENAI_CHAT, "missing-done", "a whole stream without [DONE]"),
    _repair(OPENAI_RESPONSES, "double-start", "a second response.created before content"),
    _repair(OPENAI_CHAT, "no-final-blank", "last event without its blank line"),
    _failover(ANTHROPIC, "overloaded", "HTTP 529 overloaded_error", quick=True),
    Row(
        Group.FAILOVER,
        ANTHROPIC,
        "overloaded",
        "HTTP 529; an OpenAI Chat fallback",
        quick=True,
        served_by="fallback",
        label="529 to chat",
        fallback_fmt=OPENAI_CHAT,
    ),
    _failover(OPENAI_CHAT, "overloaded", "HTTP 503 server_error"),
    _failover(GEMINI, "overloaded", "HTTP 503 UNAVAILABLE"),
    _failover(ANTHROPIC, "stall-before-first", "headers, then 5 s of silence"),
    _failover(OPENAI_RESPONSES, "stall-before-first", "headers, then 5 s of silence", quick=True),
    _failover(
        ANTHROPIC,
        "stall-after-commit",
        "text, then 5 s of silence",
        served_by="primary",
        quick=True,
    ),
    _failover(OPENAI_CHAT, "stall-after-commit", "text, then 5 s of silence", served_by="primary"),
    _failover(ANTHROPIC, "json-error-200", "HTTP 200 with a JSON error body"),
    _failover(GEMINI, "json-error-200", "HTTP 200 with a JSON error body"),
    _failover(OPENAI_CHAT, "inband-error-first", "an error chunk as the first event"),
    _failover(OPENAI_CHAT, "rate-limited", "HTTP 429, retry-after: 2"),
    _failover(ANTHROPIC, "bad-request", "HTTP 400 invalid_request_error", served_by="primary"),
    Row(
        Group.REWRITE,
        ANTHROPIC,
        "healthy",
        f"answered for {ALIAS_TO}",
        quick=True,
        label="model alias",
        model=ALIAS_FROM,
    ),
    Row(
        Group.REWRITE,
        OPENAI_CHAT,
        "tool",
        "called the tool by its sanitized name",
        quick=True,
        label="tool schema",
        model=f"{TOOLS_MODEL}{MODEL_SUFFIX}tool",
    ),
)


def select(quick: bool) -> list[Row]:
    """The rows to run: all of them, or the --quick subset (one of each kind)."""
    return [r for r in ROWS if r.quick or not quick]
