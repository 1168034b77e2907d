"""Entry point: `python -m inference [serve|train]` (also `predmesh serve`, `predmesh train`)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from inference.settings import ServerSettings
from predmesh.logs import setup_logging

log = logging.getLogger("inference")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference", description="predmesh inference server")
    sub = parser.add_subparsers(dest="command")
    serve_p = sub.add_parser("serve", help="run the gRPC server (default)")
    serve_p.add_argument("--no-train", action="store_true", help="do not train a model when the store is empty")
    serve_p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of PREDMESH_PROCESSES>1
    train_p = sub.add_parser("train", help="train a new version into the model store")
    train_p.add_argument("--model", default="iris", help="model name (default: iris)")
    train_p.add_argument("--estimator", default="lr", choices=["lr", "rf"],
                         help="lr = LogisticRegression, rf = RandomForest(100)")
    train_p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    setup_logging()
    settings = ServerSettings.from_env(os.environ)

    from inference.store import ModelStore
    from inference.train import train

    store = ModelStore(settings.model_store, settings.signing_key)
    if args.command == "train":
        manifest = train(store, args.model, args.estimator, args.seed)
        print(f"trained {manifest.name} version {manifest.version} ({manifest.estimator}) into {store.root}; "
              f"holdout accuracy {manifest.metrics['holdout_accuracy']:.3f}")
        return 0
    if not store.models() and not getattr(args, "no_train", False):
        log.info("model store %s is empty: training the demo model 'iris'", store.root)
        train(store)
    if settings.processes > 1 and not getattr(args, "worker", False):
        from inference import workers
        return workers.run(settings)
    from database.migrate import SchemaNotCurrent
    from inference.app import build_persistence
    from inference.server import serve
    from inference.spool import SpoolBoundElsewhere
    try:
        persistence = build_persistence(os.environ)
    except SchemaNotCurrent as exc:
        log.error("%s (or set PREDMESH_AUTO_MIGRATE=1)", exc)
        return 2
    except SpoolBoundElsewhere as exc:
        log.error("%s", exc)
        return 2
    serve(settings, persistence.recorder, extend=persistence.attach)
    return 0


if __name__ == "__main__":
    sys.exit(main())
