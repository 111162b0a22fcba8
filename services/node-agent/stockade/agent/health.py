"""The agent's HTTP endpoints (aiohttp): ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers while the event loop runs. ``/readyz`` is 200 while the node enforces
every pod packet: the brain's model is in the kernel (and stays so while the brain is away,
fail static) and nothing lets pod traffic bypass it (the node's preflight: a bridge without
br_netfilter, IPv6 the dataplane cannot filter, a generation the agent had to refuse); 503 with
the reasons otherwise. ``/metrics`` is the Prometheus text format.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) into its parts; ``:PORT`` means every address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class HealthServer:
    """``ready()`` returns None when ready, else why not; ``metrics()`` returns (body, content type)."""

    def __init__(
        self,
        address: str,
        ready: Callable[[], str | None],
        metrics: Callable[[], tuple[bytes, str]],
        detail: Callable[[], str] | None = None,
    ) -> None:
        self.host, self.port = parse_address(address)
        self._ready = ready
        self._detail = detail  # more lines for /readyz (e.g. the brain serving the node)
        self._metrics = metrics
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        return app

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound address (the real port when asked for port 0)."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server  # aiohttp keeps the asyncio server here; the port is only known now
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.host, self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = self._ready()
        detail = self._detail() if self._detail is not None else ""
        if reason is None:
            return web.Response(text="ready\n" + detail)
        return web.Response(status=503, text=f"not ready: {reason}\n" + detail)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        body, content_type = self._metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})
