"""Health probes shared by `predmesh up --check` and the containers' health checks.

`python -m cli.probe grpc HOST:PORT [SERVICE]` exits 0 when the gRPC health service answers SERVING;
`python -m cli.probe http URL [TEXT]` exits 0 on an HTTP 200 (whose body contains TEXT, if given).
Anything else exits 1 with one line saying why. Stdlib + the SDK only, so it runs in the slim image.
"""
from __future__ import annotations

import sys
import urllib.error
import urllib.request


def grpc_health(addr: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, detail) from grpc.health.v1.Health/Check on addr, through the SDK."""
    from predmesh import Client, PredmeshError

    with Client(addr, timeout=timeout) as client:
        try:
            status = client.check_health(service)
        except PredmeshError as exc:
            return False, f"gRPC health: {exc.code.name}"
    return status == "SERVING", f"gRPC health {status}"


def http_ok(url: str, contains: str = "", timeout: float = 5.0) -> tuple[bool, str]:
    """(healthy, detail): HTTP 200 from url, and contains in the body when given."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(1 << 20).decode("utf-8", "replace")
            if resp.status != 200:
                return False, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"no answer ({getattr(exc, 'reason', exc)})"
    if contains and contains not in body:
        return False, f"HTTP 200 without {contains!r}"
    return True, "HTTP 200"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ("grpc", "http"):
        print("usage: python -m cli.probe grpc HOST:PORT [SERVICE] | http URL [TEXT]", file=sys.stderr)
        return 2
    kind, target, *extra = argv
    ok, detail = (grpc_health if kind == "grpc" else http_ok)(target, extra[0] if extra else "")
    print(f"{target}: {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
