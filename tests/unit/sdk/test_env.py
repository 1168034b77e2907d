"""predmesh.env's shared helpers: host:port splitting, URL redaction and secrets."""
from __future__ import annotations

import pytest

from predmesh.env import ConfigError, Env, redact, split_addr


@pytest.mark.parametrize(("addr", "parts"), [("127.0.0.1:50051", ("127.0.0.1", 50051)), ("h:0", ("h", 0)),
                                             ("[::1]:8080", ("::1", 8080)), ("localhost:65535", ("localhost", 65535))])
def test_split_addr(addr, parts):
    assert split_addr(addr) == parts


@pytest.mark.parametrize("addr", ["nohost", "8080", ":8080", "h:", "h:x", "h:65536", "[]:1"])
def test_split_addr_refuses_what_is_not_host_port(addr):
    with pytest.raises(ConfigError, match="must be host:port"):
        split_addr(addr)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://predmesh:s3cret@db:5432/predmesh", "postgresql://predmesh:***@db:5432/predmesh"),
    ("amqp://guest:guest@[::1]:5672/%2F", "amqp://guest:***@[::1]:5672/%2F"),  # the host as written
    ("amqps://:tok@Broker.example/vh", "amqps://:***@Broker.example/vh"),
    ("sqlite:///var/predmesh.db", "sqlite:///var/predmesh.db"),
    ("amqp://guest@host/", "amqp://guest@host/"),
    ("amqp://u:p@[::1/", "amqp://***@[::1/"),  # unreadable as a URL: everything before the @ is hidden
])
def test_redact_hides_the_password_only(url, shown):
    assert redact(url) == shown


def test_a_secret_is_stripped_from_the_variable_as_from_its_file(tmp_path):
    # A Kubernetes secret put in the environment keeps its file's newline: the server compared 'tok\n' with the
    # stripped 'tok' a client presented, and the token could never be used.
    (tmp_path / "tok").write_text("from-a-file\n")
    assert Env({"PREDMESH_X": " tok\n"}).secret("X") == "tok"
    assert Env({"PREDMESH_X_FILE": str(tmp_path / "tok")}).secret("X") == "from-a-file"
    assert Env({}).secret("X") is None
    assert Env({"PREDMESH_X": "", "PREDMESH_X_FILE": ""}).secret("X") is None  # compose's ${X:-}: unset


@pytest.mark.parametrize("case", ["empty file", "blank file", "blank value", "both", "not UTF-8"])
def test_a_secret_that_looks_like_a_mistake_stops_the_start(tmp_path, case):
    # An empty password or signing key file read as "unset" switched the dashboard's login (PREDMESH_UI_PASSWORD_FILE)
    # and the manifest signature check (PREDMESH_MODEL_SIGNING_KEY_FILE) off without a word; with both variables
    # set, the value won over the file silently (a token rotated in the file kept the old one alive).
    file = tmp_path / "secret"
    file.write_bytes({"empty file": b"", "blank file": b" \n\n", "not UTF-8": b"\xff\xfe"}.get(case, b"tok\n"))
    environ = {"blank value": {"PREDMESH_X": "  \n"}, "both": {"PREDMESH_X": "tok", "PREDMESH_X_FILE": str(file)}}
    with pytest.raises(ConfigError, match="PREDMESH_X"):
        Env(environ.get(case, {"PREDMESH_X_FILE": str(file)})).secret("X")

