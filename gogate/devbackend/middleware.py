"""The development backend's middlewares, outermost first: JSON error answers, call counting
and fault injection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .replies import Fail, json_response
from .state import STATE

__all__ = ["count_calls", "errors_as_json", "inject_faults"]

log = logging.getLogger("gogate.devbackend")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_key(request: web.Request) -> str:
    """The field that carries an error's text: the internal API says ``error``, the user API
    ``message`` (``error`` too with legacy shapes: the original Go gateway reads no other)."""
    path = request.path
    if path.startswith("/api/internal/"):
        return "error"
    if path.startswith("/api/v1/") and request.app[STATE].legacy_shapes:
        return "error"
    return "message"


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal, unknown route and crash answers JSON, as the real backend does."""
    try:
        return await handler(request)
    except Fail as fail:
        body = fail.body
        if "message" in body and _error_key(request) == "error":
            body = {"error" if k == "message" else k: v for k, v in body.items()}
        return json_response(body, fail.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_response({_error_key(request): exc.reason}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({_error_key(request): "Internal server error"}, 500)


@web.middleware
async def count_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count each call gogate makes, answered or refused, for ``GET /api/dev/stats``."""
    calls = request.app[STATE].calls
    name = request.match_info.route.name
    if name in calls:
        calls[name] += 1
    return await handler(request)


@web.middleware
async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Delay or fail the requests the fault set by ``PUT /api/dev/faults`` matches."""
    state = request.app[STATE]
    fault = state.fault
    path = request.path
    if fault is None or path.startswith("/api/dev/") or not path.startswith(fault.match):
        return await handler(request)
    if fault.remaining is not None:
        fault.remaining -= 1
        if fault.remaining <= 0 and state.fault is fault:
            state.fault = None
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    if fault.status is None:
        return await handler(request)
    return json_response({_error_key(request): "Injected failure"}, fault.status)
