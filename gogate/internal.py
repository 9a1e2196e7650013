"""The internal HTTP server on ``INTERNAL_HOST:INTERNAL_PORT``: gogate's API for the backend,
and ``/metrics`` for Prometheus.

It listens apart from the public port so that it can stay off the public network. Every call
of the API needs ``X-Internal-API-Key`` (compared in constant time); ``/metrics`` does not.
One server per host: in the single worker, or in the supervisor of several workers, which
reaches all of them (:class:`Deployment`).
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any, Protocol

import msgspec
from aiohttp import web

from gogate.events import encode
from gogate.log import internal_log
from gogate.metrics import CONTENT_TYPE_LATEST

__all__ = ["Deployment", "DisconnectRequest", "InternalServer", "PublishRequest",
           "close_reason"]

_JSON = "application/json"
_CLOSE_REASON_BYTES = 123  # the most a WebSocket close frame carries


class Deployment(Protocol):
    """What the internal API does, for one worker or for a supervisor's workers."""

    def publish_users(self, user_ids: list[int], event: str, payload: bytes) -> None: ...

    def publish_chat(self, chat_id: int, event: str, payload: bytes) -> None: ...

    def invalidate(self, chat_id: int) -> None: ...

    async def online(self, user_ids: list[int]) -> list[int]: ...

    async def disconnect(self, user_id: int, reason: str, at: float) -> int:
        """Revoke the user at ``at`` everywhere; the connections closed on this host."""
        ...

    async def metrics_text(self) -> bytes: ...


class PublishRequest(msgspec.Struct, forbid_unknown_fields=True):
    event: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    data: msgspec.Raw
    chat_id: Annotated[int, msgspec.Meta(gt=0)] | None = None
    user_ids: Annotated[list[Annotated[int, msgspec.Meta(gt=0)]],
                        msgspec.Meta(max_length=100_000)] | None = None


_decode_publish = msgspec.json.Decoder(PublishRequest).decode


class DisconnectRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str | None = None


_decode_disconnect = msgspec.json.Decoder(DisconnectRequest).decode


def close_reason(reason: str | None) -> str:
    """The words of a revocation's close frame: the backend's reason (else ``revoked``), cut
    to what a close frame holds without splitting a character."""
    cut = (reason or "revoked").encode()[:_CLOSE_REASON_BYTES]
    return cut.decode("utf-8", "ignore") or "revoked"


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode({"error": message}),
                        content_type=_JSON)


class InternalServer:
    """The internal API and metrics of one host."""

    def __init__(self, deployment: Deployment, host: str, port: int, api_key: str) -> None:
        self._deployment = deployment
        self._host = host
        self._port = port
        self._key = api_key.encode()
        self._runner: web.AppRunner | None = None
        self.port = port

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._check_key], client_max_size=8 * 1024 * 1024)
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_post("/api/internal/v1/publish", self._publish)
        app.router.add_post("/api/internal/v1/chats/{chat_id}/members/invalidate",
                            self._invalidate)
        app.router.add_get("/api/internal/v1/online", self._online)
        app.router.add_post("/api/internal/v1/users/{user_id}/disconnect", self._disconnect)
        return app

    @web.middleware
    async def _check_key(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            given = request.headers.get("X-Internal-API-Key", "").encode("utf-8",
                                                                           "surrogateescape")
            if not self._key or not hmac.compare_digest(given, self._key):
                return _error(401, "Invalid API key")
        response: web.StreamResponse = await handler(request)
        return response

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=await self._deployment.metrics_text(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _publish(self, request: web.Request) -> web.Response:
        try:
            body = _decode_publish(await request.read())
        except msgspec.DecodeError as exc:
            return _error(400, f"Invalid request: {exc}")
        if not bytes(body.data).lstrip().startswith(b"{"):
            return _error(400, "Invalid request: data must be an object")
        if (body.chat_id is None) == (body.user_ids is None):
            return _error(400, "Invalid request: give exactly one of chat_id and user_ids")
        payload = encode(body.event, body.data)
        if body.chat_id is not None:
            self._deployment.publish_chat(body.chat_id, body.event, payload)
        else:
            assert body.user_ids is not None
            self._deployment.publish_users(sorted(set(body.user_ids)), body.event, payload)
        return web.Response(status=202, body=b'{"status":"accepted"}', content_type=_JSON)

    async def _invalidate(self, request: web.Request) -> web.Response:
        try:
            chat_id = int(request.match_info["chat_id"])
        except ValueError:
            return _error(400, "Invalid chat id")
        self._deployment.invalidate(chat_id)
        return web.Response(status=204)

    async def _disconnect(self, request: web.Request) -> web.Response:
        at = time.time()  # one moment for every worker and host to compare iat with
        raw = request.match_info["user_id"]
        if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 2**63:
            return _error(400, "Invalid user id")
        body = await request.read()
        try:
            reason = _decode_disconnect(body).reason if body.strip() else None
        except msgspec.DecodeError as exc:
            return _error(400, f"Invalid request: {exc}")
        closed = await self._deployment.disconnect(int(raw), close_reason(reason), at)
        internal_log.info("user %s revoked by the backend: %d connections closed on this host",
                          raw, closed, extra={"user_id": int(raw)})
        return web.Response(body=msgspec.json.encode({"closed": closed}), content_type=_JSON)

    async def _online(self, request: web.Request) -> web.Response:
        raw = request.query.get("user_ids", "")
        try:
            ids = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            return _error(400, "user_ids must be comma-separated integers")
        if len(ids) > 10_000:
            return _error(400, "at most 10000 user_ids")
        online = await self._deployment.online(ids)
        return web.Response(body=msgspec.json.encode({"online": online}), content_type=_JSON)

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        internal_log.info("internal API listening on http://%s:%d", self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
