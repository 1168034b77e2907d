"""The contract's source: every unary RPC has a google.api.http binding (read from the .proto files)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted((ROOT / "protos" / "predmesh").rglob("*.proto")), ids=lambda p: p.name)
def test_every_unary_rpc_has_an_http_binding(path):
    rpcs = re.findall(r"rpc (\w+)\((stream )?\w+\) returns \((stream )?\w+\)\s*(\{|;)", path.read_text())
    for name, client_stream, server_stream, body in rpcs:
        if not client_stream and not server_stream:
            assert body == "{", f"{path.name}: unary RPC {name} has no google.api.http option"
