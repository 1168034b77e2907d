"""Throwaway test PKI made with the openssl CLI: a CA, a server cert for localhost, client certs, a rogue CA."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TestPki:
    ca: Path
    server: Pair          # CN/SAN localhost, 127.0.0.1 (serverAuth)
    client: Pair          # signed by ca (clientAuth)
    rogue_ca: Path
    rogue_client: Pair    # signed by rogue_ca


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ca(d: Path, name: str) -> Pair:
    pair = Pair(d / f"{name}.pem", d / f"{name}.key")
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", f"/CN=predmesh test {name}", "-keyout", str(pair.key), "-out", str(pair.cert),
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pair


def _leaf(d: Path, name: str, ca: Pair, cn: str, ext: str) -> Pair:
    pair = Pair(d / f"{name}.pem", d / f"{name}.key")
    csr, extfile = d / f"{name}.csr", d / f"{name}.ext"
    extfile.write_text(ext)
    _run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", f"/CN={cn}", "-keyout", str(pair.key), "-out", str(csr))
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
         "-days", "2", "-extfile", str(extfile), "-out", str(pair.cert))
    return pair


def make_pki(d: Path) -> TestPki:
    d.mkdir(parents=True, exist_ok=True)
    ca, rogue = _ca(d, "ca"), _ca(d, "rogue-ca")
    server = _leaf(d, "server", ca, "localhost",
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client = _leaf(d, "client", ca, "predmesh-client", "extendedKeyUsage=clientAuth\n")
    rogue_client = _leaf(d, "rogue-client", rogue, "predmesh-client", "extendedKeyUsage=clientAuth\n")
    return TestPki(ca.cert, server, client, rogue.cert, rogue_client)
