"""A worker survives losing Redis while it holds an unacknowledged message (found by the soak).

Celery 5.7 tears a broken broker connection down with ``collect()`` then ``close()``. When
the channel's first close fails half-way on the dead socket, the second one used to raise
``AttributeError`` from kombu (not a connection error), and the worker exited with
"Unrecoverable error" on every Redis restart that found a task in flight
(``rlhf_platform.celery`` guards against it). This replays that teardown on a private
redis-server (never the shared one), with the same kinds of queues a worker consumes: a
task queue holding one delivered, unacknowledged message and the control fanout queue.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import pytest
from kombu import Connection, Exchange, Producer, Queue

import rlhf_platform.celery  # noqa: F401 - installs the guard, as in every worker


@pytest.fixture
def private_redis(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_tearing_down_a_lost_connection_with_an_unacked_message_raises_no_attribute_error(
    private_redis,
):
    proc, url = private_redis
    conn = Connection(url)
    conn.ensure_connection(max_retries=3)
    channel = conn.default_channel
    tasks = Queue("t", Exchange("t"), "t")
    control = Queue("control", Exchange("control", type="fanout"), auto_delete=True)
    Producer(channel).publish(
        {"task": 1}, exchange=tasks.exchange, routing_key="t", declare=[tasks]
    )
    delivered = []
    consumer = conn.Consumer(
        [tasks, control], callbacks=[lambda body, m: delivered.append(m)], prefetch_count=2
    )
    consumer.consume()
    conn.drain_events(timeout=5)
    assert len(delivered) == 1  # in flight: delivered, not acknowledged
    try:
        conn.drain_events(timeout=0.3)  # leaves a read pending, as in the worker's event loop
    except TimeoutError:
        pass

    proc.send_signal(signal.SIGKILL)  # the broker goes away
    proc.wait(timeout=10)

    # What Celery's consumer does on the connection error (on_connection_error_after_connected).
    conn.collect(socket_timeout=1)
    try:
        conn.close()
    except conn.connection_errors:
        pass  # Celery ignores these and reconnects; an AttributeError would kill the worker
