"""`predmesh rollout | pin | rollback`: change the version of a model every replica serves (through the SDK).

The call goes to one replica's admin API (PREDMESH_SERVER_ADDR, else PREDMESH_GRPC_ADDR; the admin token from
PREDMESH_ADMIN_TOKEN or PREDMESH_ADMIN_TOKEN_FILE). That replica verifies the version (loads and smoke-tests it)
and records it in the database the fleet shares; every other replica applies it within
PREDMESH_DESIRED_STATE_POLL_SECONDS, and replicas started later serve it from their first call.
"""
from __future__ import annotations

import argparse
import os
import sys

from predmesh.env import DEFAULT_GRPC_ADDR, ConfigError, Env, env_epilog

USAGE = {
    "rollout": "make a stored version the one every replica serves (or start a canary beside it)",
    "pin": "pin every replica to a stored version (held on purpose)",
    "rollback": "every replica back to the version that served before (from the recorded history)",
    "desired": "show a model's desired version and what the answering replica serves",
}
VARIABLES = ["PREDMESH_SERVER_ADDR", "PREDMESH_GRPC_ADDR", "PREDMESH_ADMIN_TOKEN", "PREDMESH_ADMIN_TOKEN_FILE"]


def parser(action: str, prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=USAGE[action], epilog=env_epilog(VARIABLES),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model name")
    if action in ("rollout", "pin"):
        p.add_argument("version", help="a version in the model store (`predmesh desired MODEL` shows the current)")
    if action != "desired":
        p.add_argument("--reason", default="", help="why (recorded with the change)")
        p.add_argument("--by", default="", help="who (recorded with the change; default: the replica's name)")
    if action == "rollout":
        p.add_argument("--canary", "--candidate", dest="candidate", default="", metavar="VERSION",
                       help="a canary: VERSION takes --share of the calls beside the served version")
        p.add_argument("--share", type=float, default=0.0,
                       help="the candidate's traffic share, above 0 and at most 1 (needed with --canary)")
        p.add_argument("--window", type=_seconds, default=None, metavar="SECONDS",
                       help="decide automatically: roll back as soon as a check fails, promote after SECONDS "
                       "(e.g. 300 or 5m) when every check passed (without it: decided by hand)")
        p.add_argument("--min-feedback", type=int, default=20, help="feedback rows each side needs (default 20)")
        p.add_argument("--min-requests", type=int, default=20,
                       help="candidate calls the error, latency and agreement checks need (default 20)")
        p.add_argument("--max-accuracy-drop", type=float, default=None,
                       help="serving accuracy minus candidate accuracy allowed, 0 to 1")
        p.add_argument("--max-error-rate", type=float, default=None, help="candidate failed-call share allowed")
        p.add_argument("--max-p99-ratio", type=float, default=None,
                       help="candidate p99 latency / serving p99 latency allowed")
        p.add_argument("--min-agreement", type=float, default=None,
                       help="share of candidate rows the serving version must label the same, 0 to 1")
    p.add_argument("--server", default="", help="a replica's gRPC address or the gateway's admin listener "
                   "(default: PREDMESH_SERVER_ADDR, else PREDMESH_GRPC_ADDR)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    return p


def _seconds(text: str) -> float:
    """Seconds as a number, or with a unit: 90, 90s, 5m, 1h."""
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:].lower(), 0)
    try:
        value = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 300, 90s, 5m)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _criteria(args):
    from predmesh import CanaryCriteria

    if args.window is None:
        return None
    return CanaryCriteria(args.window, args.min_feedback, args.min_requests, args.max_accuracy_drop,
                          args.max_error_rate, args.max_p99_ratio, args.min_agreement)


def _accuracy(side) -> str:
    return "-" if side.accuracy is None else f"{side.accuracy:.3f}"


def describe(state) -> list[str]:
    """`predmesh desired`: the desired state, then each recorded canary with its figures."""
    wanted = (f"version {state.version}{' (pinned)' if state.pinned else ''}, set by {state.updated_by}"
              + (f": {state.reason}" if state.reason else "") if state.version
              else "none recorded (each replica serves its newest stored version)")
    lines = [f"{state.model}: desired {wanted}"]
    for run in state.canaries:
        c, s = run.candidate_side, run.serving
        lines.append(f"  canary #{run.id} {run.candidate} vs {run.baseline} (share {run.share:g}): {run.status}"
                     f" after {run.elapsed_s:.0f} s" + (f" by {run.decided_by}" if run.decided_by else ""))
        lines.append(f"    candidate: {c.requests} rows, {c.errors}/{c.calls} failed, accuracy {_accuracy(c)} over "
                     f"{c.feedback} feedback, p99 {c.p99_ms:.1f} ms; serving: {s.requests} rows, accuracy "
                     f"{_accuracy(s)} over {s.feedback} feedback, p99 {s.p99_ms:.1f} ms; agreement {run.agreed}/"
                     f"{run.compared}")
        if run.summary:
            lines.append(f"    {run.summary}")
    return lines


def main(argv: list[str] | None = None, prog: str = "predmesh") -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in USAGE:
        print(f"usage: {prog} {{{','.join(USAGE)}}} MODEL ...", file=sys.stderr)
        return 2
    action = argv[0]
    args = parser(action, f"{prog} {action}").parse_args(argv[1:])
    env = Env(os.environ)
    target = args.server or env.str("SERVER_ADDR", "") or env.str("GRPC_ADDR", DEFAULT_GRPC_ADDR)
    try:
        token = env.secret("ADMIN_TOKEN")
    except ConfigError as exc:  # an unreadable or blank token file, both variables set
        print(f"{prog} {action}: {exc}", file=sys.stderr)
        return 2
    if not token:
        print(f"{prog} {action}: set PREDMESH_ADMIN_TOKEN (or PREDMESH_ADMIN_TOKEN_FILE): the admin API needs it",
              file=sys.stderr)
        return 2

    from predmesh import Client, PredmeshError

    try:
        with Client(target, admin_token=token, timeout=args.timeout) as client:
            if action == "rollout":
                state = client.rollout_model(args.model, args.version, reason=args.reason, changed_by=args.by,
                                             candidate=args.candidate, candidate_share=args.share,
                                             canary=_criteria(args))
            elif action == "pin":
                state = client.pin_model(args.model, args.version, reason=args.reason, changed_by=args.by)
            elif action == "rollback":
                state = client.rollback_model(args.model, reason=args.reason, changed_by=args.by)
            else:
                state = client.get_desired_state(args.model)
    except PredmeshError as exc:
        if exc.code.name == "UNIMPLEMENTED":  # e.g. PREDMESH_SERVER_ADDR names the gateway's public listener
            print(f"{prog} {action}: {target} does not serve the admin API ({exc.message.strip()}); it may be the "
                  "gateway's public listener: pass --server with a replica's gRPC address (PREDMESH_GRPC_ADDR) or "
                  "the gateway's admin listener (PREDMESH_GATEWAY_ADMIN_ADDR)", file=sys.stderr)
            return 1
        print(f"{prog} {action}: {str(exc).strip()}", file=sys.stderr)
        return 1
    if action == "desired":
        first, *rest = describe(state)
        print(f"{first}; {target} serves {state.serving_version or 'nothing'}")
        for line in rest:
            print(line)
        return 0
    for line in changed(state, target, getattr(args, "window", None)):  # rollout only
        print(line)
    return 0


def changed(state, target: str, window: float | None) -> list[str]:
    """What a rollout, pin or rollback did, for the operator: the canary it started, and the version every
    replica now moves to, or keeps when the change left it as it was (a canary beside the served version)."""
    lines = []
    if state.candidate:
        lines.append(f"{state.model}: canary {state.candidate} takes {state.candidate_share:g} of the calls beside "
                     f"version {state.version}" + ("" if window is None else f"; decided automatically within "
                                                   f"{window:g} s"))
    pinned = " (pinned)" if state.pinned else ""
    if state.previous_version and state.previous_version != state.version:
        moves = f"every replica now moves to version {state.version}{pinned} (was {state.previous_version})"
    elif state.previous_version:
        moves = f"every replica keeps version {state.version}{pinned}"
    else:
        moves = f"every replica now moves to version {state.version}{pinned} (was none)"
    lines.append(f"{state.model}: {moves}; {target} serves {state.serving_version}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
