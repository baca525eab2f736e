"""A plain ASGI middleware for gateways and non-FastAPI apps: no framework needed.

Refused requests get the RFC 6750 status, `WWW-Authenticate` and a JSON body
`{"error", "message"}`; accepted ones carry the claims in ``scope["auth"]`` (Starlette's
``request.auth``) and ``scope["state"]["access_claims"]``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from authsvc.verifier.core import AuthenticationFailed, Verifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class VerifierMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: Verifier,
        scopes: Collection[str] = (),
        roles: Collection[str] = (),
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.scopes = tuple(scopes)
        self.roles = tuple(roles)
        self.exempt_paths = frozenset(exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        authorization = None
        proofs: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"dpop":
                proofs.append(value.decode("latin-1"))
        try:
            if len(proofs) > 1:  # RFC 9449 section 4.3 step 1
                raise AuthenticationFailed(
                    400, "invalid_request", "Send one DPoP proof.", self.verifier.realm, dpop=True
                )
            claims = await self.verifier.authenticate(
                authorization,
                self.scopes,
                self.roles,
                dpop=proofs[0] if proofs else None,
                method=scope.get("method", "GET"),
                path=scope.get("path", "/"),
            )
        except AuthenticationFailed as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # policy violation
                return
            await _reject(send, exc)
            return
        scope["auth"] = claims
        scope.setdefault("state", {})["access_claims"] = claims
        await self.app(scope, receive, send)


async def _reject(send: Send, exc: AuthenticationFailed) -> None:
    body = json.dumps({"error": exc.error or "invalid_token", "message": exc.message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
