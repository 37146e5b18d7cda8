"""The rule registry: every validation rule mitmllm knows, with a stable ID and a default severity.

IDs follow the project's SSE rule catalogue (HTTP-*, SSE-*, PAY-*, ANT-*, OAI-*, RSP-*, GEM-*,
REQ-*); TAP-* and RLY-* are mitmllm's own (the tap and the relay reporting on themselves), and
FIX-* are the repairs mitmllm makes to a stream (`mitmllm.protocol.repair`), recorded like
findings.

Each rule has a one-line `title` (what the rule requires, or for a repair what it does; the
README's rule list is generated from it) and an `effect` (what official clients do when it is
broken, or get from the repair; appended to every finding's message). `checked` is False for
rules that describe parser behaviour mitmllm implements rather than something it can observe on
the wire. A repair names the rules it `mends`.

Which findings fail an attempt before the client has seen anything (the commit gate,
`mitmllm.protocol.gate`) follows from here: `fails` is True for the error rules of the stream
(SSE, PAY and the four formats) whose effect is that a client raises, loses or misreads the
answer, which is all of them but the few marked `survivable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.ERROR: 2, Severity.WARNING: 1, Severity.INFO: 0}


E, W, I = Severity.ERROR, Severity.WARNING, Severity.INFO  # noqa: E741


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: Severity
    title: str
    effect: str = ""
    checked: bool = True
    #: for a repair (FIX-*): the rules whose findings it makes go away
    mends: tuple[str, ...] = ()
    #: an error the official clients get through with the answer intact (never fails an attempt)
    survivable: bool = False
    #: the stream starts over (a second start event, as after a gateway's retry): no repair can
    #: join two answers, so once the client has content its stream ends there with an error
    restarts: bool = False

    @property
    def family(self) -> str:
        return self.id.split("-", 1)[0]

    @property
    def fails(self) -> bool:
        """Does a finding of this rule, before the client saw anything, fail the attempt?"""
        return (
            self.severity is Severity.ERROR
            and self.family in STREAM_FAMILIES
            and self.checked
            and not self.survivable
        )


FAMILIES = {
    "HTTP": "HTTP layer",
    "SSE": "SSE framing (WHATWG)",
    "PAY": "payload (all formats)",
    "ANT": "Anthropic Messages",
    "OAI": "OpenAI Chat Completions",
    "RSP": "OpenAI Responses",
    "GEM": "Gemini",
    "REQ": "requests",
    "XLT": "translation between wire formats",
    "TAP": "mitmllm tap",
    "RLY": "mitmllm relay",
    "FIX": "mitmllm repairs (what mitmllm mended, and the rules each mends)",
}
#: Families whose rules judge an event stream (the ones a broken attempt can break).
STREAM_FAMILIES = frozenset({"SSE", "PAY", "ANT", "OAI", "RSP", "GEM"})

# fmt: off
_TABLE: list[Rule] = [
    # --- HTTP ---------------------------------------------------------------------------------
    Rule("HTTP-1", E, "a stream response has status 200",
         "SDKs raise their status error (e.g. 529 OverloadedError) before reading any event"),
    Rule("HTTP-2", E, "a streamed request gets Content-Type text/event-stream",
         "SDKs feed the body to the SSE parser and see zero events, with no error"),
    Rule("HTTP-3", I, "streaming responses should disable proxy buffering",
         "a buffering proxy delays events"),
    Rule("HTTP-4", E, "an event stream is not content-encoded (gzip, br, ...)",
         "clients and taps that read the stream incrementally see compressed bytes"),
    Rule("HTTP-5", E, "a 200 response body is not an error object",
         "the status looks successful, so clients treat the error as a result or crash on it"),
    Rule("HTTP-6", I, "the upstream accepted the request (no 4xx other than 408 and 429)",
         "SDKs raise their status error (e.g. 400 BadRequestError) and do not retry: the request "
         "needs fixing, not the upstream"),
    # --- SSE ----------------------------------------------------------------------------------
    Rule("SSE-1", E, "the stream is valid UTF-8",
         "anthropic/openai Python SDKs raise UnicodeDecodeError; TS SDKs show U+FFFD"),
    Rule("SSE-2", W, "no byte-order mark (a BOM after the first byte hides a field)",
         "Python SDKs keep the BOM in the first field name and lose that field"),
    Rule("SSE-3", E, "lines end only at CR, LF or CRLF (U+2028/U+2029 are ordinary characters)",
         "parsers that split on other separators cut events", checked=False),
    Rule("SSE-3a", W, "no raw U+2028/U+2029/NEL/VT/FF/FS/GS/RS inside data",
         "clients reading with httpx iter_lines() (google-genai) split the event"),
    Rule("SSE-4", I, "a CR at a chunk end waits for the next byte",
         "hand-rolled parsers split CRLF in two", checked=False),
    Rule("SSE-5", I, "event assembly follows WHATWG", checked=False),
    Rule("SSE-6", W, "comments (keep-alives) do not sit where clients trip on them",
         "google-genai raises on any comment; openai-go < 3.43 aborts on an empty event"),
    Rule("SSE-7", E, "field names are case-sensitive (Data:, EVENT: are not fields)",
         "every parser ignores the field, so its value is lost"),
    Rule("SSE-8", E, "every line is a known field or a comment (no bare JSON, no data ': ...')",
         "parsers drop unknown fields silently, or fail JSON-parsing a re-wrapped comment"),
    Rule("SSE-9", W, "one data: line per event",
         "js-genai and hand-rolled clients read only the first line"),
    Rule("SSE-10", W, "one event: field per event",
         "the last name wins; usually two events merged after a lost blank line"),
    Rule("SSE-11", W, "no id: field in LLM streams (and never one containing NUL)",
         "after an id the Python SDKs dispatch every blank line as an empty event"),
    Rule("SSE-12", W, "retry: holds ASCII digits only", "the field is ignored"),
    Rule("SSE-13", E, "every dispatched event carries data",
         "all four SDK decoders dispatch it and fail JSON-parsing an empty string"),
    Rule("SSE-14", E, "the final event ends with a blank line",
         "SDKs discard the unterminated event, so the stream is truncated"),
    Rule("SSE-15", E, "a stream carries at least one event",
         "clients see an empty answer with no error"),
    Rule("SSE-16", W, "a whitespace-only line is not a blank line",
         "parsers that trim lines dispatch early, the spec does not"),
    Rule("SSE-17", W, "data: is followed by one space",
         "clients that match the literal 'data: ' (google-genai) drop or reject the event"),
    Rule("SSE-18", E, "keep-alives are injected on event boundaries, never inside a line",
         "the data line is cut, the client fails JSON parsing mid-stream"),
    Rule("SSE-19", I, "no size limit on events", checked=False),
    # --- payload ------------------------------------------------------------------------------
    Rule("PAY-1", E, "every event's data is one JSON value (besides the [DONE] sentinel)",
         "SDKs raise JSONDecodeError / SyntaxError and end the stream"),
    Rule("PAY-2", I, "JSON whitespace and key order are arbitrary (never byte-match payloads)",
         checked=False),
    Rule("PAY-3", W, "no duplicate keys in one object", "parsers differ on which value wins"),
    Rule("PAY-4", W, "no lone UTF-16 surrogates or U+FFFD in text",
         "re-encoding fails (UnicodeEncodeError) or the user sees replacement characters"),
    # --- Anthropic ------------------------------------------------------------------------------
    Rule("ANT-1", E, "every event carries an event: name",
         "the SDKs dispatch by name and silently drop nameless events"),
    Rule("ANT-2", E, "the event: name equals data.type",
         "the SDKs process the data's type or drop the event"),
    Rule("ANT-3", W, "event names and types are known", "the SDKs ignore unknown events"),
    Rule("ANT-4", E, "message_start is the first event (after pings)",
         "SDKs raise 'Unexpected event order, got X before \"message_start\"'"),
    Rule("ANT-5", E, "exactly one message_start",
         "TS SDK throws; Python SDK silently merges both attempts into one message",
         restarts=True),
    Rule("ANT-6", E, "message_start.message is an empty assistant message with id, model, usage",
         "SDKs seed the snapshot from it; non-empty content shifts every block index"),
    Rule("ANT-7", E, "content block indices are 0-based and contiguous",
         "anthropic-python raises IndexError; the TS SDK silently drops the block's deltas"),
    Rule("ANT-8", W, "content_block.type is known and starts empty",
         "SDKs keep unknown blocks but cannot accumulate them"),
    Rule("ANT-9", E, "blocks are sequential: one open block at a time",
         "the TS SDK attributes deltas to the last block"),
    Rule("ANT-10", E, "a delta targets the open block",
         "anthropic-python raises IndexError; the TS SDK drops the delta"),
    Rule("ANT-11", E, "the delta type matches the block type",
         "both SDKs silently discard the delta"),
    Rule("ANT-12", E, "a tool_use block's partial_json concatenates to a JSON object",
         "SDKs raise 'Unable to parse tool parameter JSON from model'"),
    Rule("ANT-13", W, "a thinking block ends with a signature_delta",
         "the block cannot be sent back in a multi-turn request"),
    Rule("ANT-14", E, "every started block is stopped before message_delta/message_stop",
         "the message ends with a block the client never saw finish"),
    Rule("ANT-15", E, "content_block_stop names the open block, once",
         "anthropic-python raises IndexError on a stop for an unopened index"),
    Rule("ANT-16", E, "message_delta comes after all blocks, with stop_reason and usage",
         "the SDK accumulators fail reading usage.output_tokens"),
    Rule("ANT-17", W, "stop_reason agrees with the content (tool_use needs a tool_use block)",
         "agents wait for a tool result that never comes, or drop the call"),
    Rule("ANT-18", E, "exactly one message_stop, as the last event",
         "TS finalMessage() throws; Python returns the partial message silently"),
    Rule("ANT-19", E, "no event after message_stop", "SDKs merge them into the finished message"),
    Rule("ANT-20", E, "no in-stream error event (the stream failed)",
         "SDKs raise APIStatusError / APIError even though the HTTP status was 200"),
    Rule("ANT-21", I, "ping events may appear anywhere"),
    Rule("ANT-22", I, "blocks without deltas are legal",
         "an empty text block sent back gets HTTP 400"),
    # --- OpenAI Chat Completions ---------------------------------------------------------------
    Rule("OAI-1", E, "events are data-only, each with non-empty data",
         "both SDKs fail JSON-parsing the empty event"),
    Rule("OAI-2", W, "no event: field in chat streams",
         "event: error makes openai-node throw; thread.* switches the SDKs to Assistants mode"),
    Rule("OAI-3", E, "data: [DONE] ends the stream, exactly once",
         "without it the stream was truncated and SDKs end quietly"),
    Rule("OAI-4", W, "nothing after [DONE]", "the SDKs never read it"),
    Rule("OAI-5", E, "chunk envelope: object chat.completion.chunk, constant id/created/model",
         "SDK helpers skip or misattribute the chunk", survivable=True),
    Rule("OAI-6", E, "choices is an array of {index, delta, finish_reason}",
         "clients index choices[0].delta and crash"),
    Rule("OAI-7", W, "each choice's first delta carries role assistant",
         "openai-node throws 'missing role for choice N'"),
    Rule("OAI-8", E, "choices appear in index order 0, 1, 2, ...",
         "openai-python raises IndexError; openai-node rejects the index"),
    Rule("OAI-9", E, "a tool call's first fragment has id, type, name; later ones only arguments",
         "openai-python concatenates repeats ('read_fileread_file')"),
    Rule("OAI-10", E, "tool-call indices per choice are contiguous from 0, in order",
         "openai-python misaligns calls and raises IndexError; openai-node throws"),
    Rule("OAI-11", W, "tool calls do not interleave", "SDK helpers finalize a call too early"),
    Rule("OAI-12", E, "a tool call's arguments concatenate to a JSON object",
         "clients fail parsing the arguments ('non-JSON arguments')"),
    Rule("OAI-13", E, "exactly one valid finish_reason per choice, on its last chunk",
         "openai-node throws 'missing finish_reason'; the answer looks complete when it is not"),
    Rule("OAI-14", W, "no content after tool calls begin", "SDK helpers already closed the text"),
    Rule("OAI-15", E, "at most one usage chunk, right before [DONE], with choices []",
         "openai-python overwrites usage with later nulls", survivable=True),
    Rule("OAI-16", E, "no in-stream error chunk (the stream failed)",
         "SDKs raise APIError even though the HTTP status was 200"),
    Rule("OAI-17", E, "data is JSON or [DONE]", "SDKs raise SyntaxError / JSONDecodeError"),
    Rule("OAI-18", I, "extra fields are allowed", checked=False),
    # --- OpenAI Responses ------------------------------------------------------------------------
    Rule("RSP-1", W, "each event has event: equal to data.type",
         "openai-node treats event: error specially"),
    Rule("RSP-2", E, "data is an object with a string type and an integer sequence_number",
         "the SDK event models fail validation"),
    Rule("RSP-3", E, "sequence_number starts at 0 and increases by 1",
         "the SDK resume filter skips or repeats events"),
    Rule("RSP-4", E, "response.created is the first event",
         "SDKs raise 'Expected to have received response.created'", restarts=True),
    Rule("RSP-5", E, "output items are added in order with a non-empty, unique id",
         "openai-node throws 'missing output at index N'"),
    Rule("RSP-6", E, "item events reference an existing item of the right type and id",
         "openai-python asserts, openai-node throws 'expected item_id'"),
    Rule("RSP-7", E, "content parts are added in order and deltas reference an existing part",
         "openai-node throws 'missing content at index N'"),
    Rule("RSP-8", W, "*.done events agree with the deltas",
         "clients that trust .done see different text than they streamed"),
    Rule("RSP-9", E, "nothing for an item after its output_item.done; nothing after the terminal",
         "SDK accumulators reject the event"),
    Rule("RSP-10", E, "exactly one terminal response.completed|incomplete|failed, complete, last",
         "openai-python: \"Didn't receive a response.completed event\"; TypeError on no output"),
    Rule("RSP-11", E, "the stream does not end before its terminal event",
         "Codex: 'stream closed before response.completed'"),
    Rule("RSP-12", E, "no error event (the stream failed)",
         "SDKs raise APIError even though the HTTP status was 200"),
    Rule("RSP-13", W, "no data: [DONE] in Responses streams",
         "before the terminal event the SDK stops reading early"),
    Rule("RSP-14", W, "event types are known",
         "openai-node ResponseStream throws 'Unhandled response stream event'"),
    # --- Gemini ---------------------------------------------------------------------------------
    Rule("GEM-1", E, "streamGenerateContent is requested with alt=sse",
         "without it the body is a JSON array, not SSE"),
    Rule("GEM-2", E, "each event is exactly one 'data: ' line; no event:, id:, retry: or comments",
         "google-genai raises UnknownApiResponseError; js-genai drops the block"),
    Rule("GEM-3", W, "data: is followed by exactly one space",
         "google-genai raises UnknownApiResponseError"),
    Rule("GEM-4", W, "one data line per event", "js-genai breaks the JSON"),
    Rule("GEM-5", E, "no [DONE] sentinel", "google-genai raises UnknownApiResponseError"),
    Rule("GEM-6", E, "the final event ends with a blank line",
         "js-genai throws 'Incomplete JSON segment at the end'"),
    Rule("GEM-7", E, "each payload is a GenerateContentResponse",
         "google-genai fails validating the chunk"),
    Rule("GEM-8", E, "the last chunk carries finishReason (or promptFeedback.blockReason)",
         "without it the stream was truncated and the answer looks complete"),
    Rule("GEM-9", E, "no in-stream error chunk (the stream failed)",
         "google-genai raises ClientError/ServerError only if 'error' is the first key"),
    Rule("GEM-10", I, "errors before the stream come as HTTP 4xx/5xx", checked=False),
    # --- requests -------------------------------------------------------------------------------
    Rule("REQ-1", W, "OpenAI-compatible tool parameters are an object schema with properties",
         "OpenAI and compatible upstreams answer 400 'object schema missing properties'"),
    Rule("REQ-2", W, "tools use the target's own types (no Anthropic/Responses 'custom')",
         "Chat-only upstreams answer 400 \"'function' is a required property\""),
    Rule("REQ-3", E, "the request body is a JSON object with a string model",
         "the request was forwarded unchanged; no rewrite applied"),
    Rule("REQ-4", W, "Anthropic input_schema has no top-level oneOf/anyOf/allOf",
         "the Anthropic API rejects the tool with 400"),
    # --- translation ----------------------------------------------------------------------------
    Rule("XLT-1", W, "a translated request carries every field of the client's request",
         "the upstream answers without the dropped field (the finding names it)"),
    Rule("XLT-2", I, "reasoning reaches the client only where its format can show it",
         "the client gets the answer without the reasoning"),
    Rule("XLT-3", W, "everything the upstream answers has a place in the client's format",
         "the client does not see that part of the answer"),
    Rule("XLT-4", E, "the upstream stream can be translated event by event",
         "the client's stream ends with its format's error event"),
    Rule("XLT-5", W, "the upstream reports the usage the client's format needs",
         "the client sees zero token counts"),
    # --- mitmllm itself ------------------------------------------------------------------------
    Rule("TAP-1", E, "the tap processed the stream without an internal error",
         "the rest of the stream was passed through unchanged and not validated"),
    Rule("TAP-2", W, "the stream was decoded by mitmllm (not compressed or cut at headers)",
         "validation was skipped for this flow"),
    Rule("TAP-3", W, "every rewrite mitmllm made could be applied to the event or body",
         "that event or body was passed on unchanged (the upstream's model or tool name)"),
    Rule("TAP-4", I, "the flow keeps the whole stream (within mitmllm_keep_body)",
         "mitmweb, saved flows and fixtures show its start and its end around a marker, or "
         "the file in mitmllm_spill_dir; findings cover all of it"),
    Rule("RLY-1", I, "the request was served by a fallback upstream",
         "the client got a complete answer from another upstream"),
    Rule("RLY-2", E, "every upstream of the chain failed before the response started",
         "the client got an HTTP error status and may retry"),
    Rule("RLY-3", E, "the upstream failed after the response had started",
         "the stream ends with the format's terminal error event"),
    # --- repairs (mitmllm.protocol.repair) -------------------------------------------------------
    Rule("FIX-1", I, "a keep-alive spliced between an event's lines is removed, the event rejoined",
         "the client gets the event whole, with its name and data",
         mends=("SSE-13", "ANT-1", "RSP-1", "SSE-6")),
    Rule("FIX-2", I, "a keep-alive spliced inside a line is removed, the line rejoined",
         "the client parses the event's JSON instead of failing mid-stream",
         mends=("SSE-18", "PAY-1", "OAI-17", "GEM-2", "RSP-3", "RSP-8")),
    Rule("FIX-3", I, "a final event without its blank line is terminated",
         "the client dispatches the last event instead of discarding it",
         mends=("SSE-14", "GEM-6")),
    Rule("FIX-4", I, "comments and lines other than data: are removed from a Gemini stream",
         "google-genai and js-genai read every event", mends=("GEM-2",)),
    Rule("FIX-5", I, "a [DONE] sentinel in a format that has none is removed",
         "the SDK neither stops reading early nor fails parsing it", mends=("GEM-5", "RSP-13")),
    Rule("FIX-6", I, "Anthropic content block indices are renumbered from 0, contiguously; "
         "every later event naming the block follows",
         "anthropic-python finds each block instead of raising IndexError",
         mends=("ANT-7", "ANT-10", "ANT-15")),
    Rule("FIX-7", I, "a start event repeated before any content (a retried attempt) replaces the "
         "first one: message_start, response.created",
         "the client sees one message, from the attempt that answered", mends=("ANT-5", "RSP-4")),
    Rule("FIX-8", I, "Anthropic blocks still open at the final message_delta are stopped",
         "the client sees every block finish", mends=("ANT-14",)),
    Rule("FIX-9", I, "message_stop is added after a message_delta that carried a stop_reason",
         "the SDKs finish the message instead of reporting a truncated stream",
         mends=("ANT-18",)),
    Rule("FIX-10", I, "data: [DONE] is added after every choice carried its finish_reason",
         "the SDKs end the stream cleanly instead of waiting or calling it truncated",
         mends=("OAI-3",)),
    Rule("FIX-11", I, "Chat tool-call indices are renumbered from 0 per choice, in order",
         "openai-python keeps each call apart instead of misaligning them",
         mends=("OAI-10",)),
    Rule("FIX-12", I, "Responses sequence numbers are renumbered 0, 1, 2, ...",
         "the SDK resume filter neither skips nor repeats events", mends=("RSP-3",)),
    Rule("FIX-13", I, "Responses output and content indices are renumbered in order",
         "openai-node finds each output item and part", mends=("RSP-5", "RSP-6", "RSP-7")),
]
# fmt: on

RULES: dict[str, Rule] = {r.id: r for r in _TABLE}


def rule(rule_id: str) -> Rule:
    return RULES[rule_id]
