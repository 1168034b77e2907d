"""The dashboard application: one Session (store + state per tab) and one page per browser session, served by
Panel (Bokeh server); everything runs on the server's event loop."""
from __future__ import annotations

import asyncio
import logging
from functools import partial

import panel as pn

from ui import views
from ui.session import Session
from ui.settings import UiSettings

log = logging.getLogger(__name__)
_closing: set[asyncio.Task] = set()   # sessions closing their channels (a reference keeps the task alive)


def connect(settings: UiSettings, admin_token: str | None = None):
    """A new asyncio SDK client for this dashboard (transport "ui"), sending the writer token with feedback;
    admin calls go to admin_server when set.
    Call it on the event loop that will use it (grpc.aio channels belong to their loop)."""
    from predmesh import AsyncClient

    target = (settings.admin_server or settings.server) if admin_token else settings.server
    return AsyncClient(target, timeout=settings.timeout_s, transport="ui", admin_token=admin_token,
                       writer_token=settings.writer_token)


def _on_error(exc: Exception) -> None:
    """Panel's handler for exceptions escaping a callback: logged once, never shown as a traceback."""
    log.error("dashboard callback failed: %s: %s", type(exc).__name__, exc)


def session_page(settings: UiSettings) -> pn.viewable.Viewable:
    """Build the page of one new browser session."""
    pn.extension("tabulator")
    pn.config.exception_handler = _on_error
    session = Session(partial(connect, settings), target=settings.server, refresh_s=settings.refresh_s)
    page = views.dashboard(session, settings.title)
    # Panel annotates the callback as a plain function or a coroutine object, but its PeriodicCallback awaits what
    # a coroutine function returns (panel/io/callbacks.py): an async def is what it expects here.
    periodic = pn.state.add_periodic_callback(
        session.tick, period=int(settings.refresh_s * 1000), start=False)  # type: ignore[arg-type]

    async def loaded():
        await session.start()
        if not session.store.closed:
            periodic.start()

    def destroyed(_context):  # the tab is gone: no more refreshes, and its channels close
        periodic.stop()
        task = asyncio.get_running_loop().create_task(session.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    pn.state.onload(loaded)
    pn.state.on_session_destroyed(destroyed)
    return page


def server_kwargs(settings: UiSettings) -> dict:
    """pn.serve / get_server arguments: loopback by default, websocket origins restricted, optional login."""
    kwargs = {"address": settings.host, "port": settings.port, "websocket_origin": settings.websocket_origins,
              "title": f"{settings.title} dashboard", "show": False,
              "liveness": True}  # GET /liveness: 200 without building a page (for health probes)
    if settings.password:  # Panel's login page, throttled, with SameSite=Strict cookies (ui.login)
        from ui.login import ThrottledLogin

        kwargs.update(auth_provider=ThrottledLogin(settings.password), cookie_secret=settings.cookie_secret)
    return kwargs


def serve(settings: UiSettings) -> None:
    """Run the dashboard until interrupted."""
    def page() -> pn.viewable.Viewable:  # a plain function: Panel calls it once per session
        return session_page(settings)

    pn.serve({"/": page}, start=True, **server_kwargs(settings))
