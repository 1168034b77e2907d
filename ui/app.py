"""The dashboard application: one shared feed per process (ui.feed), one Session (store + state) and one page per
browser session, served by Panel (Bokeh server); everything runs on the server's event loop."""
from __future__ import annotations

import logging
from functools import partial

import panel as pn

from ui import views
from ui.feed import Feed
from ui.session import Session
from ui.settings import UiSettings

log = logging.getLogger(__name__)

UNUSED_CHECK_MS = 2000        # how often Bokeh looks for sessions without a connection ...
UNUSED_LIFETIME_MS = 10000    # ... and drops those unconnected this long (a page connects well within it)


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


_feeds: dict[UiSettings, Feed] = {}   # the process's shared feed (one per settings: one in a running dashboard)


def feed_for(settings: UiSettings) -> Feed:
    """The process-wide feed every tab of this dashboard subscribes to (made on first use, on the server's loop)."""
    feed = _feeds.get(settings)
    if feed is None:
        feed = _feeds[settings] = Feed(partial(connect, settings), target=settings.server,
                                       refresh_s=settings.refresh_s)
    return feed


def session_page(settings: UiSettings) -> pn.viewable.Viewable:
    """Build the page of one new browser session: it subscribes to the shared feed once loaded, and leaves it when
    the session is destroyed (the tab closed): the feed then stops polling for it."""
    pn.extension("tabulator")
    pn.config.exception_handler = _on_error
    doc = pn.state.curdoc
    session = Session(feed_for(settings), partial(connect, settings), schedule=partial(_on_page, doc))
    page = views.dashboard(session, settings.title)

    async def loaded():
        await session.start()

    def destroyed(_context):  # the tab is gone: no more updates for it
        session.close()

    pn.state.onload(loaded)
    pn.state.on_session_destroyed(destroyed)
    return page


def _on_page(doc, callback) -> None:
    """Run a page update on its document's next tick (with its lock, as the page's own callbacks run)."""
    if doc is None or doc.session_context is None:
        callback()
        return
    try:
        doc.add_next_tick_callback(pn.state._handle_exception_wrapper(callback, doc))
    except Exception:  # the document is being torn down (the tab closed): nothing to show
        log.debug("page update dropped: the page is gone")


def server_kwargs(settings: UiSettings) -> dict:
    """pn.serve / get_server arguments: loopback by default, websocket origins restricted, optional login."""
    kwargs = {"address": settings.host, "port": settings.port, "websocket_origin": settings.websocket_origins,
              "title": f"{settings.title} dashboard", "show": False,
              "liveness": True,  # GET /liveness: 200 without building a page (for health probes)
              # a closed tab's session ends (and leaves the shared feed) within ~12 s, not Bokeh's 15-32 s
              "check_unused_sessions_milliseconds": UNUSED_CHECK_MS,
              "unused_session_lifetime_milliseconds": UNUSED_LIFETIME_MS}
    if settings.password:  # Panel's login page, throttled, with SameSite=Strict cookies (ui.login)
        from ui.login import ThrottledLogin

        kwargs.update(auth_provider=ThrottledLogin(settings.password), cookie_secret=settings.cookie_secret)
    return kwargs


def serve(settings: UiSettings) -> None:
    """Run the dashboard until interrupted."""
    def page() -> pn.viewable.Viewable:  # a plain function: Panel calls it once per session
        return session_page(settings)

    pn.serve({"/": page}, start=True, **server_kwargs(settings))
