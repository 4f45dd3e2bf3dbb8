"""A lean asyncio HTTP/1.1 client and the simulated annotators.

The benchmark machine has 2 cores shared by the server, PostgreSQL and the clients, so the
client must cost little CPU per request: one keep-alive connection per annotator, requests
written by hand, responses parsed with ``Content-Length`` (or chunked) and nothing else. The
client's own CPU time per request is measured and reported with the results.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ml_worker.core.choice import Choice

CLOSE = object()


class HttpError(Exception):
    """The connection broke or the response could not be read."""


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects after the server closes it.

    ``keep_alive=False`` opens a new connection for every request (``Connection: close``),
    for a server that closes after each response without saying so (uWSGI's HTTP router,
    which Label Studio's image puts behind nginx, itself connecting per request)."""

    def __init__(
        self, host: str, port: int, timeout: float = 120.0, keep_alive: bool = True
    ) -> None:
        self.host, self.port, self.timeout, self.keep_alive = host, port, timeout, keep_alive
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._request(method, path, headers, body), self.timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc

    async def _request(self, method, path, headers, body):
        if self.writer is None:
            await self._connect()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if not self.keep_alive:
            lines.append("Connection: close")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        elif method != "GET":
            lines.append("Content-Length: 0")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise ValueError("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = None, False, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            data = b"".join(parts)
        elif length is not None:
            data = await reader.readexactly(length)
        else:
            data = await reader.read()
            close = True
        if close or not self.keep_alive:
            self.close()
        return status, data


@dataclass
class Recorder:
    """Every request's (endpoint, start, end, outcome), and the acknowledged label ids."""

    requests: list[tuple[str, float, float, str]] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, endpoint: str, t0: float, t1: float, outcome: str) -> None:
        self.requests.append((endpoint, t0, t1, outcome))
        if outcome not in ("ok", "nothing"):
            key = f"{endpoint}:{outcome}"
            self.errors[key] = self.errors.get(key, 0) + 1


@dataclass
class Adapter:
    """How one system is driven: build the two requests, read the two answers."""

    name: str
    next_request: Callable[[], tuple[str, str, bytes | None]]
    # -> ("item", item_id) | ("nothing", None) | ("error", outcome)
    parse_next: Callable[[int, bytes], tuple[str, object]]
    submit_request: Callable[[object, str], tuple[str, str, bytes | None]]
    parse_submit: Callable[[int, bytes], int | None]  # the stored id when acknowledged
    retry_submit: bool  # a lost submit response may be retried (idempotent)


def ours_adapter(campaign_id: int) -> Adapter:
    choices = tuple(c.value for c in Choice)

    def next_request():
        return "POST", f"/api/v1/campaigns/{campaign_id}/next/", None

    def parse_next(status, data):
        if status != 200:
            return "error", f"http{status}"
        body = json.loads(data)
        if body.get("status") == "leased":
            return "item", body["lease_id"]
        return "nothing", None

    def submit_request(lease_id, key):
        body = {"choice": random.choice(choices), "idempotency_key": key, "time_taken_ms": 1000}
        return "POST", f"/api/v1/leases/{lease_id}/label/", json.dumps(body).encode()

    def parse_submit(status, data):
        if status in (200, 201):
            return json.loads(data)["label_id"]
        return None

    return Adapter("ours", next_request, parse_next, submit_request, parse_submit, True)


def ls_adapter(project_id: int) -> Adapter:
    sides = ("left", "right")

    def next_request():
        return "GET", f"/api/projects/{project_id}/next", None

    def parse_next(status, data):
        if status == 200:
            return "item", json.loads(data)["id"]
        if status == 404:  # Label Studio answers 404 when no task is left for the user
            return "nothing", None
        return "error", f"http{status}"

    def submit_request(task_id, key):
        body = {
            "result": [
                {
                    "from_name": "pw",
                    "to_name": "a,b",
                    "type": "pairwise",
                    "origin": "manual",
                    "value": {"selected": random.choice(sides)},
                }
            ],
            "lead_time": 1.0,
            "project": project_id,
        }
        return "POST", f"/api/tasks/{task_id}/annotations/", json.dumps(body).encode()

    def parse_submit(status, data):
        if status == 201:
            return json.loads(data)["id"]
        return None

    return Adapter("label-studio", next_request, parse_next, submit_request, parse_submit, False)


async def annotator(
    adapter: Adapter,
    conn: Connection,
    token: str,
    rec: Recorder,
    stop_at: float,
    idle_sleep: float = 0.05,
    think_s: float = 0.0,
) -> None:
    headers = {
        "Authorization": f"Token {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    now = time.perf_counter
    while now() < stop_at:
        method, path, body = adapter.next_request()
        t0 = now()
        try:
            status, data = await conn.request(method, path, headers, body)
            kind, value = adapter.parse_next(status, data)
        except HttpError:
            kind, value = "error", "transport"
        rec.add("next", t0, now(), "ok" if kind == "item" else value if kind == "error" else kind)
        if kind == "nothing":
            await asyncio.sleep(idle_sleep)
            continue
        if kind == "error":
            await asyncio.sleep(idle_sleep)
            continue
        if think_s:
            await asyncio.sleep(random.uniform(0.5 * think_s, 1.5 * think_s))
        key = uuid.uuid4().hex
        attempts = 2 if adapter.retry_submit else 1
        for _attempt in range(attempts):
            method, path, body = adapter.submit_request(value, key)
            t0 = now()
            try:
                status, data = await conn.request(method, path, headers, body)
                stored = adapter.parse_submit(status, data)
                outcome = "ok" if stored is not None else f"http{status}"
            except HttpError:
                stored, outcome = None, "transport"
            t1 = now()
            rec.add("submit", t0, t1, outcome)
            if stored is not None:
                rec.acked.append(stored)
                rec.acked_at.append(t1)
                break
            if outcome != "transport":
                break


async def _progress(rec: Recorder, start: float, warm_end: float, stop_at: float, label: str):
    last_n, last_t = 0, start
    while True:
        await asyncio.sleep(1.0)
        t = time.perf_counter()
        n = len(rec.acked)
        phase = "warm-up" if t < warm_end else "measure"
        errors = sum(rec.errors.values())
        rate = (n - last_n) / (t - last_t)
        sys.stderr.write(
            f"\r  {label}: {phase} {t - start:5.1f}/{stop_at - start:.0f}s  labels {n:6d}  "
            f"{rate:7.1f}/s  errors {errors}   "
        )
        sys.stderr.flush()
        last_n, last_t = n, t
        if t >= stop_at:
            return


def run_load(
    adapter: Adapter,
    host: str,
    port: int,
    tokens: list[str],
    warmup_s: float,
    measure_s: float,
    label: str = "",
    progress: bool = True,
    think_s: float = 0.0,
    on_window: Callable[[], object] | None = None,
    keep_alive: bool = True,
) -> dict:
    """Run len(tokens) annotators for warm-up + measure seconds; returns the raw figures."""

    async def main():
        conns = [Connection(host, port, keep_alive=keep_alive) for _ in tokens]
        rec = Recorder()
        start = time.perf_counter()
        warm_end = start + warmup_s
        stop_at = warm_end + measure_s
        tasks = [
            asyncio.create_task(annotator(adapter, c, tok, rec, stop_at, think_s=think_s))
            for c, tok in zip(conns, tokens, strict=True)
        ]
        prog = (
            asyncio.create_task(_progress(rec, start, warm_end, stop_at, label))
            if progress
            else None
        )
        await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
        probe0 = on_window() if on_window else 0.0
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
        cpu1 = time.process_time()
        probe1 = on_window() if on_window else 0.0
        await asyncio.gather(*tasks)
        if prog is not None:
            prog.cancel()
            sys.stderr.write("\n")
        for c in conns:
            c.close()
        return rec, warm_end, stop_at, cpu1 - cpu0, (probe0, probe1)

    rec, warm_end, stop_at, client_cpu, probe = asyncio.run(main())
    return {
        "recorder": rec,
        "warm_end": warm_end,
        "stop_at": stop_at,
        "client_cpu_s": client_cpu,
        "window_probe": probe,  # on_window() at the window's start and end
    }
