"""Start-up helpers shared by the entry points: listen addresses checked up front, failures as one clear line."""
from __future__ import annotations

import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from predmesh.env import ConfigError, split_addr


class StartupError(RuntimeError):
    """The part cannot start (an address in use, a file missing, …); the message says what to do."""


def check_bindable(addr: str, what: str) -> None:
    """Raise StartupError unless a TCP listener could bind addr ('host:port') now. Port 0 (any) always can."""
    host, port = split_addr(addr)
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"{what} {addr}: cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            reason = {errno.EADDRINUSE: "is already in use (another server running?)",
                      errno.EADDRNOTAVAIL: "is not an address of this machine",
                      errno.EACCES: "needs privileges to bind"}.get(exc.errno or 0, f"cannot be bound ({exc.strerror})")
            raise StartupError(f"{what} {addr} {reason}") from None


def make_directory(path: Path, what: str) -> Path:
    """path, created if missing; StartupError naming what set it (a variable, a URL) when it cannot be: a file in
    the way or no right to write there ended a start with "[Errno 20] Not a directory: '…/iris'" or, for a
    database file, "[Errno 17] File exists: '…'", naming neither the setting nor what was being created."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "a file is in the way" if exc.errno == errno.EEXIST else exc.strerror
        raise StartupError(f"{what}: cannot create the directory {path} ({reason})") from None
    return path


def check_creatable(path: Path, what: str) -> Path:
    """make_directory's check without creating anything (a command that may yet refuse its input, e.g. `import`,
    must leave no trace): StartupError when the nearest existing ancestor of path is not a directory or not
    writable."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and path.is_dir():
        return path
    if not existing.is_dir():
        reason = "a file is in the way" if existing == path else os.strerror(errno.ENOTDIR)
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = os.strerror(errno.EACCES)
    else:
        return path
    raise StartupError(f"{what}: cannot create the directory {path} ({reason})")


_prog = ""


def interrupt_exits(prog: str) -> None:
    """Until the part installs its own handlers (serving: a graceful stop), Ctrl-C ends the process at once with
    one line `prog: interrupted during start-up` and exit 130. Entry points call it first; the first caller's
    name stays (`predmesh` before the part it dispatches to), run_guarded refines it."""
    global _prog
    if _prog:
        return
    _prog = prog

    def interrupted(signum: int, frame: FrameType | None) -> None:
        _fail(_prog, "interrupted during start-up", 130, hard=True)

    signal.signal(signal.SIGINT, interrupted)


def run_guarded(prog: str, main: Callable[[], int]) -> int:
    """Run an entry point's main: a bad setting or a failed start ends with one line `prog: reason` on stderr and
    exit 2 (setting) or 1 (start); never a traceback for these (see interrupt_exits for Ctrl-C)."""
    global _prog
    _prog = prog
    try:
        return main()
    except ConfigError as exc:
        return _fail(prog, str(exc), 2)
    except (StartupError, OSError) as exc:
        return _fail(prog, str(exc), 1)
    except KeyboardInterrupt:  # an interrupt the handler above did not see (it was not installed)
        return _fail(prog, "interrupted", 130)


def _fail(prog: str, message: str, code: int, hard: bool = False) -> int:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    if hard or any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(code)  # a worker thread started before the failure must not keep the process alive
    return code
