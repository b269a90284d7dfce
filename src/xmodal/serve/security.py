"""Who may call the server: loopback by default, an API key for everything else.

The key is accepted as the `x-api-key` header, as `Authorization: Bearer KEY`, or as the cookie
the web page sets after the user typed it. Clients in a trusted network (such as the Docker
network an Immich server runs in, which cannot send a key) need none.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from functools import lru_cache

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xmodal.errors import XmodalError
from xmodal.settings import Settings

COOKIE_NAME = "xmodal_api_key"
_header = APIKeyHeader(name="x-api-key", auto_error=False, description="The server's API key")
_bearer = HTTPBearer(auto_error=False, description="The server's API key as a bearer token")
_cookie = APIKeyCookie(name=COOKIE_NAME, auto_error=False, description="Set by POST /api/session")


class UnsafeBindError(XmodalError):
    """Listening beyond loopback without an API key would open the library to the network."""


def is_loopback(host: str) -> bool:
    """True when `host` (an address or a name) only ever means this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond loopback without an API key."""
    if not is_loopback(settings.host) and not settings.api_key:
        raise UnsafeBindError(
            f"refusing to listen on {settings.host} without an API key: anyone on the network could use the"
            " server. Set --api-key (or XMODAL_API_KEY), or listen on 127.0.0.1"
        )


@lru_cache(maxsize=64)
def _networks(networks: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n) for n in networks)


def trusted_client(settings: Settings, host: str | None) -> bool:
    """True when the peer address lies in one of the trusted networks."""
    if not host or not settings.trusted_networks:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _networks(settings.trusted_networks))


def key_matches(settings: Settings, given: str | None) -> bool:
    """Constant-time comparison with the configured key (True when no key is configured)."""
    if not settings.api_key:
        return True
    return given is not None and hmac.compare_digest(given.encode(), settings.api_key.encode())


async def require_api_key(
    request: Request,
    header: str | None = Security(_header),
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
    cookie: str | None = Security(_cookie),
) -> None:
    """FastAPI dependency: 401 unless the request carries the API key (or no key is configured)."""
    settings: Settings = request.app.state.xmodal.settings
    if not settings.api_key or trusted_client(settings, request.client.host if request.client else None):
        return
    given = header or (bearer.credentials if bearer else None) or cookie
    if not key_matches(settings, given):
        raise HTTPException(
            401,
            "missing or wrong API key: send it in the x-api-key header or as Authorization: Bearer KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )


class SecurityHeadersMiddleware:
    """Headers every response carries: no MIME sniffing, no framing, no referrer."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
    ]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)
