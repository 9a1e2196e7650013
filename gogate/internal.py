"""The internal HTTP server on ``INTERNAL_HOST:INTERNAL_PORT``: ``/metrics`` for Prometheus.

It listens apart from the public port so that it can stay off the public network.
"""

from __future__ import annotations

from aiohttp import web

from gogate.log import internal_log
from gogate.metrics import CONTENT_TYPE_LATEST, Metrics

__all__ = ["InternalServer"]


class InternalServer:
    """An aiohttp application serving the worker's metrics."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port = port

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        return app

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        internal_log.info("internal API listening on http://%s:%d (/metrics)",
                          self._host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
