"""The completion webhook: a signed JSON POST when a job reaches a final state.

Sent by the parent (a child never holds the secret nor talks to the application),
from one background thread so a slow or dead receiver never holds up the loop
that watches the children. The body carries nothing but ids, states and counts:
the documents are patients' records, and a webhook URL is easily mis-pointed.

    POST <notify.webhook_url>
    Content-Type: application/json
    X-Docsuper-Event: job.finished
    X-Docsuper-Delivery: <uuid, the same on every retry of one delivery>
    X-Docsuper-Timestamp: <Unix seconds when signed>
    X-Docsuper-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with notify.webhook_secret>

    {"event": "job.finished", "job_id": "…", "status": "succeeded", "attempts": 1, "pages": 4}

A receiver checks the signature and the timestamp (`verify`, or the same three
lines in any language: docs/integration.md), answers 2xx, and treats deliveries
as at-least-once (the delivery id repeats on a retry). Failures — a timeout, a
refused connection, 5xx or 429 — are retried with exponential backoff; other 4xx
answers are final. Deliveries still pending when the daemon stops are dropped,
with a log line: the NOTIFY channel and the job_status view stay authoritative.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from docsuper import __version__

SIGNATURE_HEADER = "X-Docsuper-Signature"
TIMESTAMP_HEADER = "X-Docsuper-Timestamp"
DELIVERY_HEADER = "X-Docsuper-Delivery"
EVENT_HEADER = "X-Docsuper-Event"
EVENT = "job.finished"
# A receiver refuses signatures older than this (replayed captures).
DEFAULT_TOLERANCE_S = 300.0


def body(job_id: str, status: str, attempts: int, pages: int | None) -> bytes:
    """The JSON body: ids, states and counts only."""
    return json.dumps({"event": EVENT, "job_id": job_id, "status": status, "attempts": attempts,
                       "pages": pages}, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """The signature header's value for this body at this time."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, payload: bytes, signature: str, now: float | None = None,
           tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - signed_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, signed_at, payload), signature)


def retryable(status: int | None) -> bool:
    """None: no answer at all (timeout, refused, reset)."""
    return status is None or status == 429 or status >= 500


def retry_delays(retries: int, backoff_s: float, max_s: float = 300.0) -> list[float]:
    """Seconds before each retry: backoff, 2·backoff, 4·backoff … capped."""
    return [min(max_s, backoff_s * 2 ** i) for i in range(retries)]


@dataclass(frozen=True)
class Delivery:
    id: str
    body: bytes


def post(url: str, secret: str, delivery: Delivery, timeout_s: float) -> int | None:
    """One attempt; the HTTP status, or None when no answer came."""
    timestamp = int(time.time())
    request = urllib.request.Request(url, data=delivery.body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"docsuper/{__version__}", EVENT_HEADER: EVENT,
        DELIVERY_HEADER: delivery.id, TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, delivery.body)})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


class Webhook:
    """Deliveries queued by the loop, sent in order by one thread.

    The thread starts with the first delivery, not before: the fork server is
    forked from the parent at start-up, and a fork copies no thread but may copy a
    lock one holds."""

    def __init__(self, url: str, secret: str, timeout_s: float, retries: int, backoff_s: float,
                 log: Callable[..., None], send: Callable[[str, str, Delivery, float], int | None] = post) -> None:
        self.url = url
        self._secret = secret
        self._timeout_s = timeout_s
        self._delays = retry_delays(retries, backoff_s)
        self._log = log
        self._send = send
        self._pending: queue.Queue[Delivery | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._abandoned = 0  # deliveries cut short by close() while waiting to retry
        self.host = urlsplit(url).hostname or "?"  # for logs: the URL's path or query may hold a token

    def job_finished(self, job_id: str, status: str, attempts: int, pages: int | None) -> None:
        """Queue one delivery; returns at once."""
        self._pending.put(Delivery(uuid.uuid4().hex, body(job_id, status, attempts, pages)))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="docsuper-webhook", daemon=True)
            self._thread.start()

    def close(self, wait_s: float = 5.0) -> None:
        """Send what is queued for up to `wait_s`, then stop; what is left is logged and dropped."""
        if self._thread is None:
            return
        self._pending.put(None)
        self._thread.join(wait_s)
        self._stopping.set()  # cuts a backoff short; a request under way runs to its timeout
        self._thread.join(self._timeout_s + 1)
        dropped = self._abandoned + sum(1 for d in list(self._pending.queue) if d is not None)
        if dropped:
            self._log("warning", "webhook_dropped", deliveries=dropped, host=self.host)

    def _run(self) -> None:
        while not self._stopping.is_set():
            delivery = self._pending.get()
            if delivery is None:
                return
            self._deliver(delivery)

    def _deliver(self, delivery: Delivery) -> None:
        for attempt, delay in enumerate([0.0, *self._delays], start=1):
            if delay and self._stopping.wait(delay):
                self._abandoned += 1
                return
            status = self._send(self.url, self._secret, delivery, self._timeout_s)
            if status is not None and 200 <= status < 300:
                self._log("info", "webhook_sent", delivery=delivery.id, status=status, attempt=attempt,
                          host=self.host)
                return
            final = not retryable(status) or attempt > len(self._delays)
            self._log("warning", "webhook_failed", delivery=delivery.id, status=status, attempt=attempt,
                      host=self.host, retrying=not final)
            if final:
                return
