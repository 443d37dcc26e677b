"""Serving an aiohttp runner on a TCP address: the API's server and the dispatch report server."""

from __future__ import annotations

from aiohttp import web

__all__ = ["start_site"]


async def start_site(runner: web.BaseRunner, host: str, port: int) -> tuple[web.TCPSite, int]:
    """Set `runner` up and serve it on `host:port`; returns the site and its real port.

    Port 0 picks a free one. When the site cannot start (the port is taken, say),
    the runner is cleaned up before the error goes on.
    """
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return site, int(runner.addresses[0][1])
