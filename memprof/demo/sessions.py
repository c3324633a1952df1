"""A tiny server-side session store for the demo, following Starlette's ``scope["session"]`` convention
(like starsessions): the cookie carries only an id, the data stays in the process."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "demo_sid"


class ServerSessionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.store: dict[str, dict[str, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = HTTPConnection(scope).cookies.get(COOKIE)
        is_new = sid is None or sid not in self.store
        if sid is None or is_new:
            sid = secrets.token_hex(16)
            self.store[sid] = {}
        scope["session"] = self.store[sid]
        scope.setdefault("state", {})["session_id"] = sid

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and is_new:
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", f"{COOKIE}={sid}; path=/; httponly; samesite=lax")
            await send(message)

        await self.app(scope, receive, send_wrapper)
