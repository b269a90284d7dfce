"""Request limits enforced before a handler sees the body: the upload size."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    """The request body is larger than XMODAL_MAX_UPLOAD_BYTES."""

    def __init__(self, limit: int, size: int | None = None):
        told = f"request body of {size:,} bytes" if size is not None else "request body"
        super().__init__(413, f"{told} exceeds the limit of {limit:,} bytes (XMODAL_MAX_UPLOAD_BYTES)")


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once, and stops reading a body (chunked or
    lying about its length) as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            error = BodyTooLargeError(self.max_bytes, int(declared) if declared.isdigit() else None)
            await _send_json(send, error.status_code, {"detail": error.detail})
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


async def _send_json(send: Send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + [(b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
