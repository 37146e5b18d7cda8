"""The demo's clients: the official SDKs, used the way applications use them.

Anthropic Messages through ``anthropic.AsyncAnthropic().messages.stream``, Chat Completions
through ``openai.AsyncOpenAI().chat.completions.create(stream=True)`` accumulated by the SDK's
own stream state, Responses through ``responses.stream``; Gemini with a plain aiohttp request
(its SDK is not a dependency) read as complete SSE events, as google-genai reads them. Every
client has the key ``demo`` and no retries, so each row is exactly one request.

`ask` never raises for what a server does: an SDK exception is the answer (`Answer.error`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from mitmllm.demo.scenarios import LONG_TOOL_NAME
from mitmllm.demo.scenarios import ROW_HEADER
from mitmllm.demo.scenarios import Row
from mitmllm.mock.scenarios import ANTHROPIC
from mitmllm.mock.scenarios import GEMINI
from mitmllm.mock.scenarios import OPENAI_CHAT
from mitmllm.mock.scenarios import OPENAI_RESPONSES
from mitmllm.protocol import sse

API_KEY = "demo"
PROMPT = "Say hello."
#: A client gives up on one request after this long (no row should come near it).
REQUEST_TIMEOUT = 20.0


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """What the client got, in a few words."""

    text: str  # the answer's words (empty for an error or a tool call only)
    complete: bool  # the SDK reported a normal end (stop reason, finish reason, completed)
    model: str | None = None
    tools: tuple[str, ...] = ()  # names of the tool calls, as the client sees them
    error: str | None = None  # "ExceptionType detail"
    seconds: float = 0.0

    @property
    def words(self) -> int:
        return len(self.text.split())

    def describe(self) -> str:
        """E.g. ``complete message, 5 words`` or ``APIStatusError overloaded_error``."""
        words = f"{self.words} word" + ("" if self.words == 1 else "s")
        if self.error is not None:
            return f"{self.error} after {words}" if self.text else self.error
        if self.tools:
            what = "tool call " + ", ".join(self.tools)
        elif self.text:
            what = words
        else:
            what = "empty answer"
        if not self.complete:
            return f"{what}, no end reason, no error"
        return what if not self.text or self.tools else f"complete message, {what}"


async def ask(row: Row, proxy_url: str) -> Answer:
    """Send `row`'s request through the proxy at `proxy_url`; never raises for the server's
    sake."""
    headers = {ROW_HEADER: row.key, **row.headers}
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            answer = await _CLIENTS[row.fmt](row, proxy_url, headers)
    except TimeoutError:
        answer = Answer("", False, error=f"no answer within {REQUEST_TIMEOUT:g}s")
    except Exception as e:  # an SDK's exception is what the application would see
        answer = Answer(_partial(e), False, error=_error_text(e))
    return dataclasses.replace(answer, seconds=time.perf_counter() - t0)


# --- one client per format ------------------------------------------------------------------


class _Partial(Exception):
    """An SDK exception together with the text received before it."""

    def __init__(self, cause: BaseException, text: str) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.text = text


async def _anthropic(row: Row, url: str, headers: dict[str, str]) -> Answer:
    client = anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=url, max_retries=0, timeout=REQUEST_TIMEOUT
    )
    text: list[str] = []
    try:
        async with client.messages.stream(
            model=row.request_model,
            max_tokens=64,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers=headers,
        ) as stream:
            async for piece in stream.text_stream:
                text.append(piece)
            message = await stream.get_final_message()
    except Exception as e:
        raise _Partial(e, "".join(text)) from e
    finally:
        await client.close()
    words = "".join(b.text for b in message.content if b.type == "text")
    tools = tuple(b.name for b in message.content if b.type == "tool_use")
    return Answer(words, message.stop_reason is not None, message.model, tools)


def _openai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=API_KEY, base_url=f"{url}/v1", max_retries=0, timeout=REQUEST_TIMEOUT
    )


def chat_tools() -> list[dict[str, Any]]:
    """The tool row's tools: a name too long for OpenAI and an empty parameters schema."""
    function = {
        "name": LONG_TOOL_NAME,
        "description": "Search the knowledge base.",
        "parameters": {},
    }
    return [{"type": "function", "function": function}]


async def _chat(row: Row, url: str, headers: dict[str, str]) -> Answer:
    client = _openai(url)
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    extra: dict[str, Any] = {"tools": chat_tools()} if row.scenario == "tool" else {}
    text: list[str] = []
    try:
        stream = await client.chat.completions.create(
            model=row.request_model,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            extra_headers=headers,
            **extra,
        )
        chunks = 0
        async for chunk in stream:
            chunks += 1
            state.handle_chunk(chunk)
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
        # The SDK's accumulator asserts it saw a chunk; an application iterating the stream
        # just gets nothing.
        completion = state.get_final_completion() if chunks else None
    except Exception as e:
        raise _Partial(e, "".join(text)) from e
    finally:
        await client.close()
    if completion is None:
        return Answer("", False)
    if not completion.choices:
        return Answer("", False, completion.model)
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    functions = [c for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    tools = tuple(c.function.name for c in functions)
    return Answer(choice.message.content or "", bool(choice.finish_reason), completion.model, tools)


async def _responses(row: Row, url: str, headers: dict[str, str]) -> Answer:
    client = _openai(url)
    text: list[str] = []
    try:
        async with client.responses.stream(
            model=row.request_model, input=PROMPT, extra_headers=headers
        ) as stream:
            async for event in stream:
                if event.type == "response.output_text.delta":
                    text.append(event.delta)
            response = await stream.get_final_response()
    except Exception as e:
        raise _Partial(e, "".join(text)) from e
    finally:
        await client.close()
    tools = tuple(item.name for item in response.output if item.type == "function_call")
    complete = response.status == "completed"
    return Answer(response.output_text, complete, response.model, tools)


async def _gemini(row: Row, url: str, headers: dict[str, str]) -> Answer:
    endpoint = f"{url}/v1beta/models/{row.request_model}:streamGenerateContent?alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(
            endpoint, json=body, headers={"x-goog-api-key": API_KEY, **headers}
        ) as resp:
            raw = await resp.read()
            if resp.status != 200:
                return Answer("", False, error=f"HTTP {resp.status} {_gemini_status(raw)}")
    # Complete events only: the unterminated tail of a stream is not an event.
    events, _ = sse.decode_all(raw)
    text: list[str] = []
    finish = None
    model = None
    for ev in events:
        if ev.data is None:
            continue
        try:
            chunk = orjson.loads(ev.data)
        except orjson.JSONDecodeError:
            return Answer("".join(text), False, error="JSONDecodeError in an event")
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            return Answer("".join(text), False, error=f"APIError {error.get('status', '')}".strip())
        model = chunk.get("modelVersion", model)
        for candidate in chunk.get("candidates") or []:
            for part in (candidate.get("content") or {}).get("parts") or []:
                if isinstance(part.get("text"), str) and not part.get("thought"):
                    text.append(part["text"])
            finish = candidate.get("finishReason") or finish
    return Answer("".join(text), finish is not None, model)


def _gemini_status(raw: bytes) -> str:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    error = payload.get("error") if isinstance(payload, dict) else None
    return str(error.get("status", "")) if isinstance(error, dict) else ""


_CLIENTS = {
    ANTHROPIC: _anthropic,
    OPENAI_CHAT: _chat,
    OPENAI_RESPONSES: _responses,
    GEMINI: _gemini,
}


# --- what an exception says ---------------------------------------------------------------


def _partial(e: BaseException) -> str:
    return e.text if isinstance(e, _Partial) else ""


def _error_text(e: BaseException) -> str:
    """The exception's type and the error type the server named, e.g. ``APIStatusError
    overloaded_error``; for other exceptions the type and a short message."""
    cause = e.cause if isinstance(e, _Partial) else e
    name = type(cause).__name__
    kind = _error_type(getattr(cause, "body", None))
    if kind:
        return f"{name} {kind}"
    if isinstance(cause, anthropic.APIStatusError | openai.APIStatusError):
        return f"{name} HTTP {cause.status_code}"
    if isinstance(cause, anthropic.APIError | openai.APIError):
        return name
    detail = str(cause).split("\n", 1)[0]
    if not detail or isinstance(cause, json.JSONDecodeError):  # its position says little
        return name
    return f"{name}: {detail}"


def _error_type(body: Any) -> str | None:
    """The error type in an API error body (Anthropic, OpenAI or Gemini shape)."""
    if not isinstance(body, dict):
        return None
    error = body.get("error", body)
    if not isinstance(error, dict):
        return None
    for key in ("type", "status", "code"):
        value = error.get(key)
        if isinstance(value, str) and value and value != "error":
            return value
    return None
