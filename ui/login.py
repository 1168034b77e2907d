"""The dashboard's login (PREDMESH_UI_PASSWORD): Panel's basic login page, throttled, with SameSite=Strict cookies."""
from __future__ import annotations

import hmac
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from panel.auth import BasicAuthProvider, BasicLoginHandler

log = logging.getLogger(__name__)

FREE_FAILURES = 3           # failed logins per client address before each further attempt must wait
MAX_DELAY_S = 300.0         # the longest wait of one address (doubles per failure: 1, 2, 4 ... 300 s)
FORGET_AFTER_S = 900.0      # an address's failures are forgotten after this long without one
GLOBAL_FAILURES = 30        # failed logins from all addresses together per GLOBAL_WINDOW_S ...
GLOBAL_WINDOW_S = 60.0      # ... beyond which every login waits for the window to move on
LOCAL_DIST = "/static/extensions/panel/"   # Panel's own files (logo, icon) as this server serves them: never a CDN


class _LocalAssets:
    """Panel's login template, with its logo and icon from this server rather than Panel's CDN (which fails
    offline and tells a third party who opens the dashboard)."""

    def __init__(self, template):
        self._template = template

    def render(self, **kwargs) -> str:
        return self._template.render(**{**kwargs, "PANEL_CDN": LOCAL_DIST})


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0


class LoginGate:
    """Counts failed logins per client address and overall, and says how long a new attempt must wait.

    An address may fail FREE_FAILURES times; then each attempt waits 2**(failures - FREE_FAILURES) s after its last
    failure (at most MAX_DELAY_S), and attempts made earlier are refused without looking at the password. All
    addresses together may fail GLOBAL_FAILURES times per GLOBAL_WINDOW_S (many addresses guessing at once). A
    success clears the address's record."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._by_address: dict[str, _Record] = {}
        self._recent: deque[float] = deque()

    def wait_s(self, address: str) -> float:
        """Seconds before `address` may try again (0: now)."""
        now = self._clock()
        while self._recent and self._recent[0] <= now - GLOBAL_WINDOW_S:
            self._recent.popleft()
        overall = self._recent[0] + GLOBAL_WINDOW_S - now if len(self._recent) >= GLOBAL_FAILURES else 0.0
        record = self._by_address.get(address)
        own = 0.0
        if record is not None and record.failures >= FREE_FAILURES:
            own = record.last + min(2.0 ** (record.failures - FREE_FAILURES), MAX_DELAY_S) - now
        return max(overall, own, 0.0)

    def failed(self, address: str) -> None:
        now = self._clock()
        self._recent.append(now)
        for stale in [a for a, r in self._by_address.items() if r.last <= now - FORGET_AFTER_S]:
            del self._by_address[stale]
        record = self._by_address.setdefault(address, _Record())
        record.failures += 1
        record.last = now

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)


class LoginHandler(BasicLoginHandler):
    """Panel's login page with a throttle, a constant-time password check and SameSite=Strict, HttpOnly cookies."""

    password: str = ""          # both set by ThrottledLogin on its own subclass
    gate: LoginGate

    def set_cookie(self, name, value, *args, **kwargs):  # every cookie of the login flow (user, id_token, next_url)
        kwargs.update(httponly=True, samesite="Strict")
        return super().set_cookie(name, value, *args, **kwargs)

    def _validate(self, username, password) -> bool:
        return hmac.compare_digest(password.encode(), self.password.encode())

    def post(self):
        address = self.request.remote_ip or "unknown"
        wait = self.gate.wait_s(address)
        if wait > 0:  # refused before the password is even looked at: guessing gains nothing
            seconds = math.ceil(wait)
            log.warning("login refused: too many failed logins (client %s, retry in %d s)", address, seconds)
            self.set_status(429)
            self.set_header("Retry-After", str(seconds))
            self.write(self._login_template.render(
                login_endpoint=self._login_endpoint, PANEL_CDN=LOCAL_DIST,
                errormessage=f"Too many failed logins: try again in {seconds} s."))
            return
        if self._validate(self.get_argument("username", ""), self.get_argument("password", "")):
            self.gate.succeeded(address)
        else:
            self.gate.failed(address)
            log.warning("failed login from %s", address)
        super().post()


class ThrottledLogin(BasicAuthProvider):
    """Panel's basic-auth provider with LoginHandler; pass it to pn.serve as `auth_provider` (not `basic_auth`)."""

    def __init__(self, password: str, gate: LoginGate | None = None):
        self._password, self._gate = password, gate or LoginGate()
        self._handler: type[LoginHandler] | None = None
        super().__init__()  # reads login_handler to validate itself

    @property
    def login_handler(self) -> type[LoginHandler]:
        if self._handler is None:  # its own subclass: the password and the gate belong to this provider
            self._handler = type("LoginHandler", (LoginHandler,), {
                "password": self._password, "gate": self._gate,
                "_login_endpoint": self._login_endpoint, "_login_template": _LocalAssets(self._login_template)})
        return self._handler
