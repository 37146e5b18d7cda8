"""Where LLM API requests carry credentials: the one list the relay, the configuration and the
fixture recorder all use (lower-case names)."""

from __future__ import annotations

#: Headers an upstream's own key replaces: each API's way of sending it.
AUTH_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})
#: Every request header that carries a credential.
CREDENTIAL_HEADERS = AUTH_HEADERS | {"proxy-authorization", "cookie"}
#: Query parameters that carry a key (Gemini's `key=`, some gateways' `api_key=`).
CREDENTIAL_QUERY = frozenset({"key", "api_key", "api-key"})
