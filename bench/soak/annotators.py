"""Simulated annotators: HTTP clients that loop next comparison -> label, as a careful real
client would (docs/api.md):

- every answer gets one idempotency key, chosen before the first attempt and sent again,
  unchanged, on every retry of that answer;
- connection errors, timeouts, 429 and 5xx are retried with capped exponential backoff and
  full jitter (honouring ``Retry-After``); a submit whose outcome is unknown (the request
  may have reached the server) is resubmitted with the same key;
- ``409 lease_expired`` / ``lease_closed`` on a submit means the lease ran out (e.g. during a
  long outage): the answer was never acknowledged, the client asks for the next comparison.

Every non-2xx answer and every exception is recorded with its kind, so the soak can classify
what the clients saw. A few annotators now and then take a lease and walk away (a closed
tab) so that the lease sweeper has work.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

import requests

from ml_worker.core.choice import Choice

#: What a client may retry: the server or the network said "not now".
RETRYABLE_STATUS = {429, 502, 503, 504}
#: 409 codes on a submit that end that answer without an error: the lease is gone.
LEASE_GONE = {"lease_expired", "lease_closed"}
CHOICES = [c.value for c in Choice]


@dataclass
class Event:
    """One non-2xx answer or exception seen by a client."""

    t: float  # seconds since the soak started
    annotator: str
    endpoint: str  # "next" or "label"
    kind: str  # e.g. "connection_error", "timeout", "http_503:service_unavailable"
    retryable: bool
    attempt: int


@dataclass
class Ack:
    """A label the server acknowledged with 2xx."""

    t: float
    annotator: str
    label_id: int
    lease_id: int
    idempotency_key: str
    choice: str  # as sent, in the shown order
    status: int  # 201 stored, 200 replay
    attempts: int


@dataclass
class Shared:
    """What all annotator threads write to (under ``lock``)."""

    t0: float
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acks: list[Ack] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lease_gone: list[dict] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)  # lease ids walked away from
    nothing_queued: int = 0
    requests: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0


def _classify(exc: BaseException | None, resp: requests.Response | None) -> tuple[str, bool]:
    if exc is not None:
        if isinstance(exc, requests.Timeout):
            return "timeout", True
        if isinstance(exc, requests.ConnectionError):
            return "connection_error", True
        return f"exception:{type(exc).__name__}", False
    assert resp is not None
    code = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            code = str(body.get("code", ""))
    except ValueError:
        code = "non_json"
    return f"http_{resp.status_code}:{code}", resp.status_code in RETRYABLE_STATUS


class Annotator(threading.Thread):
    def __init__(
        self,
        *,
        name: str,
        token: str,
        base_url: str,
        campaign_id: int,
        shared: Shared,
        seed: int,
        think: tuple[float, float],
        walk_away: float,
        walk_away_seconds: float,
        timeout: float = 10.0,
    ):
        super().__init__(name=name, daemon=True)
        self.token = token
        self.base = base_url.rstrip("/")
        self.campaign_id = campaign_id
        self.shared = shared
        self.rng = random.Random(seed)
        self.think = think
        self.walk_away = walk_away
        self.walk_away_seconds = walk_away_seconds
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.crashed: BaseException | None = None

    # -- HTTP with retries -------------------------------------------------------------

    def _backoff(self, attempt: int, resp: requests.Response | None) -> float:
        if resp is not None and resp.headers.get("Retry-After", "").isdigit():
            return min(10.0, float(resp.headers["Retry-After"]))
        return self.rng.uniform(0, min(5.0, 0.2 * 2**attempt))

    def _post(self, endpoint: str, path: str, body: dict | None, *, must_finish: bool):
        """POST until a non-retryable answer. ``must_finish``: keep going after the soak's
        stop (a submit in flight must learn its outcome); else give up at the stop."""
        attempt = 0
        give_up_at = None
        while True:
            attempt += 1
            exc = resp = None
            try:
                resp = self.session.post(self.base + path, json=body, timeout=self.timeout)
            except requests.RequestException as e:
                exc = e
                # A dropped keep-alive connection is dropped for good: start afresh.
                self.session.close()
            with self.shared.lock:
                self.shared.requests += 1
            if resp is not None and resp.status_code < 300:
                return resp, attempt
            kind, retryable = _classify(exc, resp)
            if resp is not None and resp.status_code == 500:
                # A careful client retries a 500 too, but the soak counts it as a bug: an
                # outage must be answered 503 (retryable), not "something went wrong".
                self._record(endpoint, kind, False, attempt)
            elif retryable:
                self._record(endpoint, kind, True, attempt)
            else:
                return resp, attempt  # a definite answer: the caller classifies it
            if self.shared.stop.is_set():
                if not must_finish:
                    return None, attempt
                give_up_at = give_up_at or time.monotonic() + 120
                if time.monotonic() > give_up_at:
                    return None, attempt
            time.sleep(self._backoff(attempt, resp))

    def _record(self, endpoint: str, kind: str, retryable: bool, attempt: int) -> None:
        with self.shared.lock:
            self.shared.events.append(
                Event(self.shared.now(), self.name, endpoint, kind, retryable, attempt)
            )

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported by the soak as a failure
            self.crashed = exc

    def _loop(self) -> None:
        while not self.shared.stop.is_set():
            resp, _ = self._post(
                "next", f"/api/v1/campaigns/{self.campaign_id}/next/", None, must_finish=False
            )
            if resp is None:
                return
            if resp.status_code >= 300:
                self._unexpected("next", resp)
                time.sleep(1.0)
                continue
            served = resp.json()
            if served.get("status") != "leased":
                with self.shared.lock:
                    self.shared.nothing_queued += 1
                self.shared.stop.wait(self.rng.uniform(0.5, 1.5))
                continue
            lease_id = served["lease_id"]
            if self.rng.random() < self.walk_away:
                # A closed tab: the lease is left to expire and to the sweeper.
                with self.shared.lock:
                    self.shared.abandoned.append(lease_id)
                self.shared.stop.wait(self.walk_away_seconds)
                continue
            if self.shared.stop.wait(self.rng.uniform(*self.think)):
                return  # walk away at the end: the sweeper must free the lease
            self._submit(lease_id)

    def _submit(self, lease_id: int) -> None:
        choice = self.rng.choice(CHOICES)
        key = str(uuid.UUID(int=self.rng.getrandbits(128)))
        body = {"choice": choice, "idempotency_key": key, "time_taken_ms": 1000}
        resp, attempts = self._post(
            "label", f"/api/v1/leases/{lease_id}/label/", body, must_finish=True
        )
        if resp is None:
            return  # outcome unknown after two minutes of retries: counted as not acked
        if resp.status_code in (200, 201):
            data = resp.json()
            ack = Ack(
                self.shared.now(),
                self.name,
                int(data["label_id"]),
                int(data["lease_id"]),
                key,
                choice,
                resp.status_code,
                attempts,
            )
            with self.shared.lock:
                self.shared.acks.append(ack)
            return
        code = _classify(None, resp)[0].split(":", 1)[1]
        if resp.status_code == 409 and code in LEASE_GONE:
            with self.shared.lock:
                self.shared.lease_gone.append(
                    {
                        "t": self.shared.now(),
                        "annotator": self.name,
                        "lease_id": lease_id,
                        "code": code,
                        "attempts": attempts,
                    }
                )
            return
        self._unexpected("label", resp)

    def _unexpected(self, endpoint: str, resp: requests.Response) -> None:
        kind, _ = _classify(None, resp)
        self._record(endpoint, kind, False, 0)


def summary(shared: Shared) -> dict:
    return {
        "acks": [asdict(a) for a in shared.acks],
        "events": [asdict(e) for e in shared.events],
    }
