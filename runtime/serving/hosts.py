"""The Host check: bound to a loopback address, only requests that name a loopback host are answered (421)."""

from __future__ import annotations

import json

from runtime.serving.protocol import shown
from runtime.serving.state import ServerState

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(scope) -> str:
    """The host a request names (its Host header, the port and IPv6 brackets removed), lower-cased."""
    raw = next((v for k, v in scope.get("headers", ()) if k == b"host"), b"").decode("latin-1").strip().lower()
    if raw.startswith("["):
        return raw[1:raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


def host_allowed(state: ServerState, scope) -> bool:
    """DNS rebinding: a web page the user opens can point a name it controls at 127.0.0.1 and then drive a server on
    localhost with the page's own Host header. Bound to a loopback address, the server answers only requests that
    name a loopback host (or one of --allowed-hosts), as Jupyter does; others get 421."""
    return state.allowed_hosts is None or host_name(scope) in state.allowed_hosts


async def misdirected(scope, send, state: ServerState) -> None:
    name = shown(host_name(scope) or "(none)")
    body = json.dumps({"error": f"This server answers for {', '.join(sorted(state.allowed_hosts))} only, not the Host "
                                f"{name}; start it with --allowed-hosts to add a name."}).encode()
    await send({"type": "http.response.start", "status": 421,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
