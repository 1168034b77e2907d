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

from predmesh.env import DEFAULT_GRPC_ADDR, Env, env_epilog

USAGE = {
    "rollout": "make a stored version the one every replica serves",
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
        p.add_argument("--candidate", default="", help="record a candidate version (traffic split not applied)")
        p.add_argument("--share", type=float, default=0.0, help="the candidate's traffic share, 0 to 1")
    p.add_argument("--server", default="", help="a replica's gRPC address (default: PREDMESH_SERVER_ADDR, else "
                   "PREDMESH_GRPC_ADDR)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    return p


def main(argv: list[str] | None = None, prog: str = "predmesh") -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in USAGE:
        print(f"usage: {prog} {{{','.join(USAGE)}}} MODEL ...", file=sys.stderr)
        return 2
    action = argv[0]
    args = parser(action, f"{prog} {action}").parse_args(argv[1:])
    env = Env(os.environ)
    target = args.server or env.str("SERVER_ADDR", "") or env.str("GRPC_ADDR", DEFAULT_GRPC_ADDR)
    token = env.secret("ADMIN_TOKEN")
    if not token:
        print(f"{prog} {action}: set PREDMESH_ADMIN_TOKEN (or PREDMESH_ADMIN_TOKEN_FILE): the admin API needs it",
              file=sys.stderr)
        return 2

    from predmesh import Client, PredmeshError

    try:
        with Client(target, admin_token=token, timeout=args.timeout) as client:
            if action == "rollout":
                state = client.rollout_model(args.model, args.version, reason=args.reason, changed_by=args.by,
                                             candidate=args.candidate, candidate_share=args.share)
            elif action == "pin":
                state = client.pin_model(args.model, args.version, reason=args.reason, changed_by=args.by)
            elif action == "rollback":
                state = client.rollback_model(args.model, reason=args.reason, changed_by=args.by)
            else:
                state = client.get_desired_state(args.model)
    except PredmeshError as exc:
        print(f"{prog} {action}: {exc}", file=sys.stderr)
        return 1
    if action == "desired":
        wanted = (f"version {state.version}{' (pinned)' if state.pinned else ''}, set by {state.updated_by}"
                  + (f": {state.reason}" if state.reason else "") if state.version
                  else "none recorded (each replica serves its newest stored version)")
        print(f"{state.model}: desired {wanted}; {target} serves {state.serving_version or 'nothing'}")
        return 0
    print(f"{state.model}: every replica now moves to version {state.version}"
          f"{' (pinned)' if state.pinned else ''} (was {state.previous_version or 'none'}); {target} serves "
          f"{state.serving_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
