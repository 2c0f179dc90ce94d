"""What the daemon does for the application besides running jobs: the completion webhook
(`notify.*`, supervisor/webhook.py) and retention (`retention.*`, supervisor/retention.py).

Kept out of the loop itself: the supervisor makes one of these and calls `tick` on
every turn and `close` at tear-down; everything else happens here. Nothing starts
before the first delivery (no thread exists when the fork server is forked).
"""

from __future__ import annotations

from .config import Config
from .logs import Logger
from .queue.base import FinalState, Queue
from .retention import Retention
from .webhook import Webhook


class ApplicationHooks:
    def __init__(self, cfg: Config, queue: Queue, log: Logger) -> None:
        self.webhook: Webhook | None = None
        if cfg.notify.webhook_url:
            n = cfg.notify
            self.webhook = Webhook(n.webhook_url, n.webhook_secret, n.webhook_timeout_s, n.webhook_retries,
                                   n.webhook_backoff_s, log.log)
            queue.add_final_listener(self._job_final)
        r = cfg.retention
        # A slice of a heartbeat per batch: the loop that runs it renews the leases.
        self.retention = Retention(queue, r.finished_days, r.dead_days, r.batch, r.interval_s, log.log,
                                   budget_s=min(1.0, cfg.queue.heartbeat_s / 4))

    def _job_final(self, final: FinalState) -> None:
        if self.webhook is not None:
            self.webhook.job_finished(final.job_id, final.status, final.attempts, final.pages)

    def tick(self, now: float) -> None:
        """On every turn of the loop (`now` monotonic); does a purge batch only when one is due."""
        self.retention.tick(now)

    def close(self, wait_s: float = 5.0) -> None:
        if self.webhook is not None:
            self.webhook.close(wait_s)
