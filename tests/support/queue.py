"""RabbitMQ for tests: per-test names on the shared broker, a consumer subprocess, a private broker node to kill,
and a TCP proxy the test can make silent or reset."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import pika.spec

from predmesh import jobs
from tests.support.procs import ROOT, free_port, wait_for

DEFAULT_TEST_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def shared_amqp_url() -> str:
    return os.environ.get("PREDMESH_TEST_AMQP_URL", DEFAULT_TEST_AMQP_URL)


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


class Broker:
    """Blocking helpers on a broker: queue depths, draining queues, deleting a test's topology."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.topology = jobs.Topology(prefix)
        self.ctl_environ: dict | None = None  # rabbitmqctl's environment (default: this process's)

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.url))

    def declare(self, ch) -> None:
        """The consumer's topology (as predmesh.publisher and the consumer declare it), for publishing raw jobs."""
        t = self.topology
        ch.exchange_declare(t.dead_exchange, "fanout", durable=True)
        ch.exchange_declare(t.results_exchange, "topic", durable=True)
        ch.queue_declare(t.dead_queue, durable=True, arguments=t.dead_queue_arguments())
        ch.queue_bind(t.dead_queue, t.dead_exchange, routing_key="#")
        ch.queue_declare(t.work_queue, durable=True, arguments=t.work_queue_arguments())

    def publish_confirmed(self, messages: list[tuple[bytes, pika.BasicProperties]], window: int = 500) -> None:
        """Publish raw (body, properties) jobs to the work queue with pipelined confirms (a confirm round trip per
        job would take minutes for 10,000 jobs); raises unless the broker confirmed every one."""
        with self.connect() as conn:
            self.declare(conn.channel())
            opened: list = []
            # a raw channel (pika's private impl, as predmesh.publisher): confirms not awaited one by one
            conn._impl.channel(on_open_callback=opened.append)  # type: ignore[attr-defined]
            while not opened:
                conn.process_data_events(0.05)
            ch = opened[0]
            outstanding: set[int] = set()
            failed: list[int] = []

            def on_confirm(frame) -> None:
                m = frame.method
                done = {s for s in outstanding if s <= m.delivery_tag} if m.multiple else {m.delivery_tag}
                outstanding.difference_update(done)
                if isinstance(m, pika.spec.Basic.Nack):
                    failed.extend(done)

            ready: list = []
            ch.confirm_delivery(on_confirm, callback=ready.append)
            ch.add_on_return_callback(lambda *args: failed.append(0))
            while not ready:
                conn.process_data_events(0.05)
            for seq, (body, props) in enumerate(messages, 1):
                while len(outstanding) >= window:
                    conn.process_data_events(0.01)
                ch.basic_publish("", self.topology.work_queue, body, props, mandatory=True)
                outstanding.add(seq)
            deadline = time.monotonic() + 120
            while outstanding and time.monotonic() < deadline:
                conn.process_data_events(0.05)
            ch.close()  # before the connection: BlockingConnection.close() cannot close a raw channel
            while not ch.is_closed:
                conn.process_data_events(0.05)
            assert not outstanding and not failed, f"{len(outstanding)} unconfirmed, {len(failed)} nacked/returned"

    def depth(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue, or None if it does not exist / the broker is down."""
        try:
            with self.connect() as conn:
                frame = conn.channel().queue_declare(queue, passive=True)
                return frame.method.message_count, frame.method.consumer_count
        except (pika.exceptions.AMQPError, OSError):
            return None

    def unacked(self, queue: str) -> int | None:
        """Messages delivered and not yet acked (rabbitmqctl; the shared broker's node by default)."""
        out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "messages_unacknowledged"],
                             capture_output=True, text=True, timeout=60, env=self.ctl_env()).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        return None

    def ctl_env(self) -> dict:
        return self.ctl_environ if self.ctl_environ is not None else dict(os.environ)

    def drain(self, queue: str, timeout: float = 2.0) -> list[tuple[pika.spec.BasicProperties, bytes]]:
        """Take (and ack) every message now in a queue."""
        out: list[tuple[pika.spec.BasicProperties, bytes]] = []
        with self.connect() as conn:
            ch = conn.channel()
            for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
                if method is None:
                    break
                assert props is not None and body is not None and method.delivery_tag is not None
                out.append((props, body))
                ch.basic_ack(method.delivery_tag)
            ch.cancel()
        return out

    def bind_results(self, name: str | None = None) -> str:
        """A durable queue bound to the results exchange for every key; returns its name."""
        name = name or f"{self.topology.prefix}.results.all"
        with self.connect() as conn:
            ch = conn.channel()
            ch.exchange_declare(self.topology.results_exchange, "topic", durable=True)
            ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
            ch.queue_bind(name, self.topology.results_exchange, "#")
        return name

    def delete_topology(self, extra_queues=()) -> None:
        t = self.topology
        try:
            with self.connect() as conn:
                ch = conn.channel()
                for q in (t.work_queue, t.dead_queue, *extra_queues):
                    ch.queue_delete(q)
                for x in (t.dead_exchange, t.results_exchange):
                    ch.exchange_delete(x)
        except (pika.exceptions.AMQPError, OSError):
            pass


class ConsumerProc:
    """`python -m consumer` as a child process; kill -9 and restart at will. Its metrics endpoint binds port 0 and
    the port is read from the consumer's log line (each start gets its own)."""

    def __init__(self, target: str, amqp_url: str, prefix: str, log_path: Path, env: dict | None = None):
        self.metrics_port = 0
        self.log_path = Path(log_path)
        self.env = {**os.environ, "PREDMESH_AMQP_URL": amqp_url, "PREDMESH_AMQP_PREFIX": prefix,
                    "PREDMESH_SERVER_ADDR": target,
                    "PREDMESH_CONSUMER_METRICS_ADDR": "127.0.0.1:0",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._offset = 0

    @property
    def started(self) -> subprocess.Popen:
        """The running process (an error before start())."""
        assert self.proc is not None, "not started"
        return self.proc

    def start(self, env: dict | None = None, wait: bool = True) -> ConsumerProc:
        self._log = open(self.log_path, "ab")
        self._offset, self.metrics_port = self._log.tell(), 0
        self.proc = subprocess.Popen([sys.executable, "-m", "consumer"], cwd=ROOT, env={**self.env, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.starts += 1
        if not wait:
            return self
        wait_for(lambda: self.proc.poll() is not None or self.metric("predmesh_consumer_connected") == 1, 30,
                 what="consumer connected")
        if self.proc.poll() is not None:
            raise RuntimeError(f"consumer exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.started.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        self.started.send_signal(signal.SIGTERM)
        try:
            return self.started.wait(timeout)
        finally:
            self._log.close()

    def metrics_text(self) -> str:
        import urllib.request
        if not self.metrics_port:  # not known yet: from this start's log line, once written
            with open(self.log_path, "rb") as fh:
                fh.seek(self._offset)
                found = re.search(r"consumer metrics on http://\S+:(\d+)/metrics", fh.read().decode(errors="replace"))
            if not found:
                return ""
            self.metrics_port = int(found[1])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as r:
                return r.read().decode()
        except OSError:
            return ""

    def metric(self, name: str, labels: str = "") -> float | None:
        for line in self.metrics_text().splitlines():
            if line.startswith(name + (f"{{{labels}}}" if labels else "") + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ConsumerProc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class PrivateRabbit:
    """A RabbitMQ node of our own (own node name, AMQP and distribution ports, mnesia and log dirs under a temp
    dir owned by rabbitmq), so a test can stop, restart or kill -9 it without touching the shared broker."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="predmesh-rabbit-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"pm{uuid.uuid4().hex[:8]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.env = {
            **os.environ, "RABBITMQ_NODENAME": self.name, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }

    def __enter__(self) -> PrivateRabbit:
        (self.dir / "mnesia").mkdir()
        (self.dir / "log").mkdir()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
                                                )
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.dir)], check=True)
        self.start()
        return self

    def start(self, timeout: float = 90) -> None:
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env, check=True, timeout=60,
                       capture_output=True)
        wait_for(self.accepting, timeout, 0.2, what=f"private RabbitMQ on {self.port}")

    def accepting(self) -> bool:
        try:
            pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=1")).close()
            return True
        except (pika.exceptions.AMQPError, OSError):
            return False

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return subprocess.run(["rabbitmqctl", "-q", "-n", self.name, *args], env=self.env, check=True,
                              capture_output=True, text=True, timeout=timeout).stdout

    def pid(self) -> int | None:
        try:
            return int((self.dir / "rabbit.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        wait_for(self.accepting, 60, 0.2, what="private RabbitMQ app back")

    def kill9(self) -> None:
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), 20, what="broker process gone")

    def broker(self, prefix: str) -> Broker:
        b = Broker(self.url, prefix)
        b.ctl_environ = self.env
        return b

    def __exit__(self, *exc) -> None:
        try:
            self.ctl("stop", timeout=30)
        except (subprocess.SubprocessError, OSError):
            pass
        pid = self.pid()
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class SilentProxy:
    """A TCP proxy 127.0.0.1:<port> → upstream that the test controls: `silence()` stops forwarding bytes (the
    peer looks alive but says nothing), `reset()` closes every connection with RST, `resume()` forwards again."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.silent = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))  # in this process: port 0, then ask which
        self.port = self._server.getsockname()[1]
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self.silent.is_set():  # swallow nothing, forward nothing: the peer just goes quiet
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def silence(self) -> None:
        self.silent.set()

    def resume(self) -> None:
        self.silent.clear()

    def reset(self) -> None:
        """RST every proxied connection (SO_LINGER 0), then forward again for new ones."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.close()
                except OSError:
                    pass
        self.silent.clear()

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._stopped = True
        self._server.close()
        self.reset()
