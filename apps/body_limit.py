"""A bound on request bodies, enforced while they stream in (plain ASGI middleware).

Starlette spools uploaded files to the system's temporary folder as they arrive, and FastAPI
only sees their sizes once the whole body is parsed: without this, a 500 MB upload against a
1 MB limit was refused only after 417 MB had reached the disk. Here a declared
``Content-Length`` over the limit is refused before a byte is read, and a body without one (or
lying about it) is cut off as soon as it passes the limit.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _refuse(scope, receive, send, 400, "Content-Length is not a number")
                return
            if length > self.limit:
                await _refuse(scope, receive, send, 413, self._message(length))
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI lets an HTTPException raised while the body is read through as is.
                    raise HTTPException(413, self._message(received, partial=True),
                                        headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int, partial: bool = False) -> str:
        what = "request body" if partial else f"request body of {size} bytes"
        return f"{what} is over the limit of {self.limit} bytes (INGEST_API_MAX_REQUEST_MB)"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    # The body is not read: the connection closes after the answer.
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)
