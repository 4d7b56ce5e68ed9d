"""A background thread in the worker's main process that runs `app.job_state.sweep` at start and every
`sweep_interval_s`, and sends the ids it returns to the broker again. Safe with many workers: the
sweep's updates are conditional, so each stale job is revived by exactly one of them. Each sweep also
removes this worker's cache of models deleted meanwhile (worker/model_cache.py)."""
from __future__ import annotations

import logging
import threading

from app import job_state
from app.broker import QUEUES, broker_client, enqueue_job
from app.config import Settings
from app.db import new_session
from worker.model_cache import purge_erased_models

log = logging.getLogger(__name__)


def busy_queues(settings: Settings) -> frozenset[str]:
    """Queues whose broker list still holds messages (their queued jobs are waiting, not lost)."""
    busy = set()
    with broker_client(settings).connection_for_write() as connection:
        channel = connection.default_channel
        for queue in QUEUES:
            try:
                if channel.queue_declare(queue=queue, durable=True, auto_delete=False).message_count > 0:
                    busy.add(queue)
            except Exception:  # a broker that cannot say: treat the queue as empty (a duplicate is harmless)
                pass
    return frozenset(busy)


def sweep_once(settings: Settings) -> list[str]:
    with new_session() as session:
        due = job_state.sweep(session, max_attempts=settings.max_attempts, stale_after_s=settings.stale_after_s,
                              requeue_queued_after_s=settings.requeue_queued_after_s,
                              busy_queues=busy_queues(settings))
    for job_id, queue in due:
        log.warning("re-sending job %s to queue %s (worker lost or message lost)", job_id, queue)
        enqueue_job(job_id, queue, settings)
    with new_session() as session:
        purge_erased_models(settings.cache_dir, session)
    return [job_id for job_id, _ in due]


class Sweeper(threading.Thread):
    def __init__(self, settings: Settings):
        super().__init__(name="zerodata-sweeper", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                sweep_once(self.settings)
            except Exception:  # a database or broker hiccup must not kill the worker; try again later
                log.exception("sweep failed")
            if self.stopped.wait(self.settings.sweep_interval_s):
                return
