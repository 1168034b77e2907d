"""predmesh.env's shared helpers: host:port splitting and URL redaction."""
from __future__ import annotations

import pytest

from predmesh.env import ConfigError, redact, split_addr


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
