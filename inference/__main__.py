"""Entry point: `python -m inference [serve|train]` (also `predmesh serve`, `predmesh train`)."""
from __future__ import annotations

from predmesh.startup import check_bindable, check_creatable, interrupt_exits, make_directory, run_guarded

interrupt_exits("python -m inference")  # first: Ctrl-C during the imports below ends with one line too

import argparse
import logging
import os
import sys
from pathlib import Path

from inference.settings import PersistenceSettings, ServerSettings, Settings
from predmesh import faults
from predmesh.env import env_epilog, variables_read
from predmesh.logs import setup_logging

log = logging.getLogger("inference")
# `predmesh train --estimator` choices (inference/models/tabular.py ESTIMATORS; named here so --help stays fast).
ESTIMATOR_HELP = {"lr": "LogisticRegression", "rf": "RandomForest(100)", "et": "ExtraTrees(100)",
                  "gb": "GradientBoosting", "hgb": "HistGradientBoosting (native categories)",
                  "svc": "SVC with probabilities", "knn": "KNeighbors(5)"}


def parser(prog: str) -> argparse.ArgumentParser:
    env_help = env_epilog(variables_read(ServerSettings.from_env, PersistenceSettings.from_env))
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=prog, description="predmesh inference server", epilog=env_help,
                                     formatter_class=fmt)
    sub = parser.add_subparsers(dest="command")
    serve_p = sub.add_parser("serve", help="run the gRPC server (default)", description="run the gRPC server",
                             epilog=env_help, formatter_class=fmt)
    serve_p.add_argument("--no-train", action="store_true", help="do not train a model when the store is empty")
    serve_p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of PREDMESH_PROCESSES>1
    train_env = env_epilog(variables_read(ServerSettings.from_env, only=(
        "PREDMESH_MODEL_STORE", "PREDMESH_MODEL_SIGNING_KEY", "PREDMESH_LOG_LEVEL")))
    train_p = sub.add_parser("train", help="train a new version into the model store",
                             description="train a new immutable version into the model store", epilog=train_env,
                             formatter_class=fmt)
    train_p.add_argument("--model", help="model name (default: iris, for the demo; required with --data)")
    train_p.add_argument("--data", type=Path, metavar="FILE",
                         help="your table, CSV or Parquet (.parquet): one row per example (default: the Iris demo)")
    train_p.add_argument("--target", metavar="COLUMN", help="with --data: the column holding the class to predict")
    train_p.add_argument("--drop", action="extend", nargs="+", default=[], metavar="COLUMN",
                         help="with --data: columns that are not features (ids, leaks)")
    train_p.add_argument("--estimator", choices=list(ESTIMATOR_HELP), metavar="{" + ",".join(ESTIMATOR_HELP) + "}",
                         help="; ".join(f"{k} = {v}" for k, v in ESTIMATOR_HELP.items())
                         + " (default: hgb with --data, lr for the demo)")
    train_p.add_argument("--seed", type=int, default=0)
    import_p = sub.add_parser(
        "import", help="import a fitted scikit-learn model (skops) as a new version",
        description="check a fitted scikit-learn estimator or pipeline against a sample of its data and store it "
                    "as a new version", epilog=train_env, formatter_class=fmt)
    import_p.add_argument("file", type=Path, metavar="FILE", help="the fitted model, saved with skops.io.dump")
    import_p.add_argument("--model", required=True, help="model name")
    import_p.add_argument("--data", type=Path, required=True, metavar="SAMPLE",
                          help="rows of the model's input, CSV or Parquet: its schema, checks and golden rows")
    import_p.add_argument("--target", metavar="COLUMN", help="the sample's class column: metrics on the sample")
    import_p.add_argument("--trust-pickle", action="store_true",
                          help="FILE is a joblib/pickle file you trust: unpickle it here and store it as skops")
    parser.set_defaults(commands={"serve": serve_p, "train": train_p, "import": import_p})
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m inference") -> int:
    args, extra = parser(prog).parse_known_args(argv)
    if extra:  # reported by the subcommand, so the usage line reads `predmesh serve …`
        args.commands.get(args.command, parser(prog)).error(f"unrecognized arguments: {' '.join(extra)}")
    command = args.command or "serve"
    return run_guarded(f"{prog} {command}" if args.command else prog, lambda: _run(args, command))


def _run(args: argparse.Namespace, command: str) -> int:
    settings = Settings.from_env(os.environ)  # every PREDMESH_* variable, read once
    faults.configure(os.environ.get(faults.ENV, ""))  # fault injection for the fault tests; off when unset
    server = settings.server
    setup_logging(server.log_level)

    from inference.models.store import ModelStore

    if command in ("train", "import"):  # checked, not made: a refused import leaves nothing behind
        check_creatable(server.model_store, "PREDMESH_MODEL_STORE")
    else:
        make_directory(server.model_store, "PREDMESH_MODEL_STORE")  # not a traceback of the first write in it
    store = ModelStore(server.model_store, server.signing_key)
    if command in ("train", "import"):
        from inference.errors import InvalidArgument
        try:
            return _store_model(args, command, store)
        except InvalidArgument as exc:  # the data, a column or the model cannot be used: one line naming it
            print(f"{args.commands[command].prog}: {exc}", file=sys.stderr)
            return 2
    worker = getattr(args, "worker", False)
    if not worker:  # a worker shares the port its siblings already hold (SO_REUSEPORT)
        from inference.rpc.auth import TokenAuth
        check_bindable(server.grpc_addr, "gRPC address PREDMESH_GRPC_ADDR")
        if server.metrics_addr:
            check_bindable(server.metrics_addr, "metrics address PREDMESH_METRICS_ADDR")
        # once per server (not per worker), after the checks whose failure must be the only line printed: who may
        # write monitoring data, a warning when anyone may
        TokenAuth(server.admin_token, server.readonly_token, server.writer_token, server.open_writes).announce()
        if settings.persistence.mode != "off":
            make_directory(settings.persistence.spool_dir, "PREDMESH_SPOOL_DIR")
    if not store.models() and not getattr(args, "no_train", False):
        from inference.models.train import train  # scikit-learn: only where it trains
        log.info("model store %s is empty: training the demo model 'iris'", store.root)
        train(store)
    if server.processes > 1 and not worker:
        from inference.process import workers
        return workers.run(server, spool_drain_s=settings.persistence.spool_drain_seconds)
    from database.migrate import SchemaNotCurrent
    from inference.process.persistence import Persistence
    from inference.recording.spool import SpoolBoundElsewhere
    from inference.rpc.server import serve
    try:
        persistence = Persistence(settings.persistence)
    except SchemaNotCurrent as exc:
        log.error("%s (or set PREDMESH_AUTO_MIGRATE=1)", exc)
        return 2
    except SpoolBoundElsewhere as exc:
        log.error("%s", exc)
        return 2
    serve(server, persistence.recorder, extend=persistence.attach)
    return 0


def _store_model(args: argparse.Namespace, command: str, store) -> int:
    """`train` (the Iris demo, or --data) and `import`: write a new version and say what it is."""
    from inference.bounds import check_name
    from inference.models import importer, tabular
    from inference.models.columns import TableError
    from inference.models.train import train

    if args.model:
        check_name("model", args.model)  # before any work: the store refuses it at the end otherwise
    if command == "import":
        manifest = importer.import_model(store, args.model, args.file, args.data, args.target, args.trust_pickle)
        scored = manifest.metrics.get("sample_accuracy")
        print(f"imported {manifest.name} version {manifest.version} ({manifest.estimator}, "
              f"{tabular.describe(manifest.features)}) into {store.root}"
              + (f"; sample accuracy {scored:.3f}" if scored is not None else ""))
        _note_schema_change(store, manifest)
        return 0
    if args.data is None:
        if args.target or args.drop:
            raise TableError(f"--{'target' if args.target else 'drop'} needs --data FILE (the table to train on)")
        manifest = train(store, args.model or "iris", args.estimator or "lr", args.seed)
    else:
        for given, needed in ((args.target, "--target COLUMN (the column holding the class to predict)"),
                              (args.model, "--model NAME (the name to serve it under)")):
            if not given:
                raise TableError(f"--data needs {needed}")
        manifest = tabular.train_table(store, args.data, args.target, args.model, args.estimator or "hgb",
                                       args.drop, args.seed)
    shape = f", {tabular.describe(manifest.features)}" if args.data is not None else ""
    print(f"trained {manifest.name} version {manifest.version} ({manifest.estimator}{shape}) into {store.root}; "
          f"holdout accuracy {manifest.metrics['holdout_accuracy']:.3f}")
    _note_schema_change(store, manifest)
    return 0


def _note_schema_change(store, manifest) -> None:
    """Say so when the new version's features or classes differ from the version before it: a running server keeps
    serving the old one (a reload refuses a schema change) until it restarts."""
    older = [m for m in store.manifests(manifest.name) if m.version != manifest.version]
    if older and (older[0].feature_names, older[0].classes) != (manifest.feature_names, manifest.classes):
        print(f"note: version {manifest.version} of {manifest.name} has other features or classes than version "
              f"{older[0].version}: a running server keeps serving version {older[0].version} (a reload refuses a "
              f"schema change) until it restarts; a new model name serves both", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
