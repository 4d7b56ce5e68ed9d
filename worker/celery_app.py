"""The Celery application of the workers, configured from `Settings` (see app.broker for the options).

Start a worker:  celery -A worker.celery_app worker -Q cpu   (GPU hosts: -Q gpu)
Each job runs in a fresh child process (max one task per child) with memory and CPU-time limits.
"""
from __future__ import annotations

import logging
import resource

from celery import Celery, signals

from app.broker import celery_config
from app.config import get_settings

log = logging.getLogger(__name__)

celery_app = Celery("zerodata", include=["worker.tasks"])
celery_app.conf.update(celery_config(get_settings()))


@signals.worker_process_init.connect
def limit_child_process(**_) -> None:
    """The child that loads untrusted models gets hard ceilings: address space and CPU seconds."""
    settings = get_settings()
    if settings.worker_memory_limit_mb > 0:
        limit = settings.worker_memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # CPU seconds across all threads; generous (several cores busy) but finite, above the wall-clock limit.
    cpu_limit = settings.task_hard_time_limit_s * 8 + 60
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit))
    from app.db import get_engine

    get_engine().dispose(close=False)  # never share the parent's pooled connections after fork


@signals.worker_ready.connect
def start_sweeper(**_) -> None:
    """Postgres is the source of truth: on start and then periodically, re-send jobs whose worker
    died or whose message was lost."""
    from worker.sweeper import Sweeper

    Sweeper(get_settings()).start()
