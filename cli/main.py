"""`predmesh <part> ...`: dispatch to each part's own entry point (each also runs as `python -m <package>`)."""
from __future__ import annotations

import importlib
import sys

# subcommand → (module with main(argv), argv prefix, help). The dashboard gets its subcommand (ui) when it
# lands.
COMMANDS = {
    "train": ("inference.__main__", ["train"], "train a model version into the model store"),
    "serve": ("inference.__main__", ["serve"], "run the gRPC inference server"),
    "gateway": ("gateway.__main__", [], "run the Envoy REST gateway"),
    "migrate": ("database.__main__", [], "apply database migrations"),
    "up": ("cli.up", [], "run the whole local mesh"),
    "consume": ("consumer.__main__", [], "score prediction jobs from RabbitMQ"),
    "publish": ("cli.publish", [], "queue prediction jobs on RabbitMQ"),
    "status": ("cli.up", ["--check"], "which parts of the local mesh are up (predmesh up --check)"),
    "batch": ("batch.cli", [], "batch pipeline: score files, nightly runs, backfill, luigid (Luigi)"),
}


def usage() -> str:
    lines = ["usage: predmesh <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", "Run `predmesh <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"predmesh: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, prefix, _ = COMMANDS[command]
    return importlib.import_module(module).main(prefix + rest) or 0


if __name__ == "__main__":
    sys.exit(main())
