"""The Python API for applications, against both backends (fixture `queue_spec`)."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from docsuper.supervisor.client import Client, InvalidJob, JobNotFound, PageText
from docsuper.supervisor.queue.base import AttemptEnd, Queue

from .queuekit import QueueSpec

# The PostgreSQL wait looks again every 5 s even without a NOTIFY: returning well
# before that proves the completion NOTIFY woke it.
WOKEN_WITHIN_S = 2.5


@pytest.fixture
def client(queue_spec: QueueSpec) -> Iterator[Client]:
    with Client(queue_spec.open(), poll_s=0.05) as docs:
        yield docs


def finish_soon(queue: Queue, job_id: str, end: AttemptEnd, delay_s: float) -> threading.Thread:
    """Another connection runs the job to its end a little later, as a worker would."""
    def work() -> None:
        time.sleep(delay_s)  # the scenario (the job takes a while), not a synchronisation
        [job] = queue.claim("w1", 1, 60)
        assert job.id == job_id
        queue.record_page(job_id, "w1", "ocr", 1, {"text": "Befund: unauffällig"})
        queue.record_page(job_id, "w1", "ocr", 2, {"text": "Seite 2"})
        queue.heartbeat("w1", {job_id: (2, 2, 42.0)}, 60)
        queue.finish(job_id, "w1", end, 0)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_enqueue_wait_and_read_the_results(queue_spec: QueueSpec, client: Client) -> None:
    job_id = client.enqueue("scan.pdf", options={"lang": "de"}, priority=3, idempotency_key="upload-1")
    assert client.enqueue("scan.pdf", idempotency_key="upload-1") == job_id
    job = client.get(job_id[:10])
    assert (job.id, job.status, job.source, job.passes, job.options, job.priority) == (
        job_id, "queued", "scan.pdf", ["ocr"], {"lang": "de"}, 3)

    with queue_spec.open() as worker:
        started = time.monotonic()
        thread = finish_soon(worker, job_id, AttemptEnd("succeeded", result={"ocr": {"pages": 2}}), 0.3)
        done = client.wait(job_id, timeout_s=30)
        waited = time.monotonic() - started
        thread.join()
    assert done.status == "succeeded" and waited < WOKEN_WITHIN_S
    assert (done.progress_done, done.progress_total, done.peak_mb) == (2, 2, 42.0)
    assert client.summary(job_id) == {"ocr": {"pages": 2}}
    assert client.pages(job_id) == [PageText(1, "Befund: unauffällig"), PageText(2, "Seite 2")]
    assert client.text(job_id) == "Befund: unauffällig\fSeite 2"
    assert client.wait(job_id, timeout_s=0) == client.get(job_id)  # final already: no waiting


def test_wait_gives_up_after_its_timeout(client: Client) -> None:
    job_id = client.enqueue(None, passes=["noop"])
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"job {job_id} is still queued after 0.3 s"):
        client.wait(job_id, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < WOKEN_WITHIN_S


def test_wait_hears_a_cancel_and_a_dead_letter(queue_spec: QueueSpec, client: Client) -> None:
    queued = client.enqueue(None, passes=["noop"])
    doomed = client.enqueue(None, passes=["noop"], max_attempts=1)
    assert client.cancel(queued) == "cancelled"
    assert client.wait(queued, timeout_s=5).status == "cancelled"
    with queue_spec.open() as worker:
        worker.claim("w1", 1, 60)
        thread = threading.Thread(target=worker.finish, args=(doomed, "w1", AttemptEnd("error", error="boom"), 0))
        thread.start()
        dead = client.wait(doomed, timeout_s=10)
        thread.join()
    assert (dead.status, dead.last_error) == ("dead", "boom")
    assert client.retry([doomed[:8]]) == [doomed]
    assert client.get(doomed).status == "queued"


def test_errors_are_the_queue_errors(client: Client) -> None:
    with pytest.raises(InvalidJob, match='unknown pass "orc"'):
        client.enqueue("a.pdf", passes=["orc"])
    with pytest.raises(JobNotFound):
        client.get("0123456789abcdef")
    with pytest.raises(JobNotFound):
        client.wait("0123456789abcdef", timeout_s=1)
