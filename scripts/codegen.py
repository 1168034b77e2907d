"""Generate the Python stubs of the contract into predmesh/v1 and of the vendored OIP service into predmesh/oip
(committed; tests check they are fresh)."""
import argparse
import importlib.resources
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = PROTOS / "third_party"
WELL_KNOWN = pathlib.Path(str(importlib.resources.files("grpc_tools") / "_proto"))
# Vendored protos we also serve (relative to protos/third_party); their import path is their package path.
VENDORED = ["predmesh/oip/grpc_predict_v2.proto"]


def contract_files() -> list[str]:
    """Our own .proto files (not the vendored googleapis ones), relative to protos/."""
    return sorted(
        str(p.relative_to(PROTOS))
        for p in PROTOS.rglob("*.proto")
        if THIRD_PARTY not in p.parents
    )


def generate(out: pathlib.Path) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every contract file under out."""
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *contract_files(),
        *VENDORED,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    generate(parser.parse_args(argv).out)


if __name__ == "__main__":
    main(sys.argv[1:])
