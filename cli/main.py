"""`predmesh <part> ...`: dispatch to each part's own entry point (each also runs as `python -m <package>`)."""
from __future__ import annotations

from predmesh.startup import interrupt_exits

interrupt_exits("predmesh")  # first: Ctrl-C while the part's modules load ends with one line, exit 130

import importlib
import inspect
import os
import signal
import sys

# subcommand → (module with main(argv[, prog]), argv prefix, help).
COMMANDS = {
    "train": ("inference.__main__", ["train"], "train a model version (Iris demo, or --data your CSV/Parquet)"),
    "import": ("inference.__main__", ["import"], "import a fitted scikit-learn model (skops) as a new version"),
    "serve": ("inference.__main__", ["serve"], "run the gRPC inference server"),
    "gateway": ("gateway.__main__", [], "run the Envoy REST gateway"),
    "migrate": ("database.__main__", [], "apply database migrations"),
    "retention": ("database.__main__", ["retention"], "drop stored predictions older than PREDMESH_RETENTION_DAYS"),
    "ui": ("ui.__main__", [], "run the Panel dashboard"),
    "up": ("cli.up", [], "run the whole local mesh"),
    "consume": ("consumer.__main__", [], "score prediction jobs from RabbitMQ"),
    "publish": ("cli.publish", [], "queue prediction jobs on RabbitMQ"),
    "rollout": ("cli.fleet", ["rollout"], "make a stored model version the one every replica serves"),
    "pin": ("cli.fleet", ["pin"], "pin every replica to a stored model version"),
    "rollback": ("cli.fleet", ["rollback"], "every replica back to the model version that served before"),
    "desired": ("cli.fleet", ["desired"], "a model's desired version, and what a replica serves"),
    "status": ("cli.up", ["--check"], "which parts of the local mesh are up (predmesh up --check)"),
    "batch": ("batch.cli", [], "batch pipeline: score files, nightly runs, backfill, luigid (Luigi)"),
}
# The parts whose parser turns the argv prefix into a subcommand of its own, named after `prog` (`predmesh train`):
# they are given prog "predmesh". Every other part is given `predmesh <command>`, also where its prefix is an option
# or a positional (`status` = `up --check`, `retention` = `migrate retention`), so its usage and error lines name
# the command that was typed.
NAMES_ITS_SUBCOMMAND = {"inference.__main__", "cli.fleet"}


def package_version() -> str:
    """The version in predmesh/_version.py (also the installed packages' metadata: both pyproject.toml read it)."""
    from predmesh._version import __version__
    return __version__


def usage() -> str:
    lines = ["usage: predmesh <command> [options]", "       predmesh --version", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `predmesh <command> --help` for a command's options and the environment variables it reads."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        code = dispatch(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, not at exit, so a reader gone away is handled below
        return code
    except BrokenPipeError:
        # the reader of the output went away (`predmesh desired iris | head -1`): stop quietly, as a Unix tool
        # killed by SIGPIPE would (exit 128 + 13), with stdout on /dev/null so the flush at exit cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"predmesh {package_version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"predmesh: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, prefix, _ = COMMANDS[command]
    entry = importlib.import_module(module).main
    # `prog` makes the part's usage and error lines read `predmesh <command> …` (where its main takes one)
    if "prog" in inspect.signature(entry).parameters:
        prog = "predmesh" if module in NAMES_ITS_SUBCOMMAND else f"predmesh {command}"
        return entry(prefix + rest, prog=prog) or 0
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a part without start-up guards: Ctrl-C
    return entry(prefix + rest) or 0


if __name__ == "__main__":
    sys.exit(main())
