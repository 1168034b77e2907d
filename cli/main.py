"""`predmesh <part> ...`: dispatch to each part's own entry point (each also runs as `python -m <package>`)."""
from __future__ import annotations

import importlib
import sys

# subcommand → (module with main(argv), argv prefix, help)
COMMANDS = {
    "train": ("inference.__main__", ["train"], "train a model version into the model store"),
    "serve": ("inference.__main__", ["serve"], "run the gRPC inference server"),
    "gateway": ("gateway.__main__", [], "run the Envoy REST gateway"),
    "consume": ("consumer.__main__", [], "run the RabbitMQ consumer"),
    "ui": ("ui.__main__", [], "run the Panel dashboard"),
    "batch": ("batch.__main__", [], "run the Luigi batch pipeline"),
    "migrate": ("database.__main__", [], "apply database migrations"),
    "up": ("cli.up", [], "run the whole local mesh"),
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
    try:
        entry = importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        print(f"predmesh {command}: not available in this build ({exc.name} is missing)", file=sys.stderr)
        return 2
    return entry(prefix + rest) or 0


if __name__ == "__main__":
    sys.exit(main())
