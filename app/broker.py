"""Celery settings shared by the API (which only sends `worker.compress` by name) and the worker.

The API never imports worker code: it holds a bare Celery client with the same broker settings.
"""
from __future__ import annotations

from celery import Celery

from app.config import Settings, get_settings

TASK_NAME = "worker.compress"
QUEUES = ("cpu", "gpu")


def queue_for(config: dict) -> str:
    """Jobs for CUDA go to the GPU workers' queue; everything else to the CPU workers'."""
    return "gpu" if config.get("device") == "cuda" else "cpu"


def celery_config(settings: Settings) -> dict:
    url = settings.effective_broker_url
    options: dict = {}
    if url.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        options = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
                   "processed_folder": str(folder / "processed"), "store_processed": False,
                   "control_folder": str(folder / "control")}
    elif url.startswith(("redis://", "rediss://")):
        # Unacked messages come back after the visibility timeout, which must exceed the hard time limit.
        options = {"visibility_timeout": settings.broker_visibility_timeout_s}
        if settings.broker_key_prefix:
            options["global_keyprefix"] = settings.broker_key_prefix
    if settings.task_hard_time_limit_s >= settings.broker_visibility_timeout_s:
        raise ValueError("task_hard_time_limit_s must be below broker_visibility_timeout_s")
    if settings.task_soft_time_limit_s >= settings.task_hard_time_limit_s:
        raise ValueError("task_soft_time_limit_s must be below task_hard_time_limit_s")
    return dict(
        broker_url=url,
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_default_queue="cpu",
        task_acks_late=True,  # a message is acknowledged only once its job is recorded
        task_reject_on_worker_lost=True,  # a killed child puts the message back instead of dropping it
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,  # each job in a fresh process: no leaked memory or torch state
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_hard_time_limit_s,
        worker_enable_remote_control=not url.startswith("filesystem://"),
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )


_clients: dict[int, tuple[Settings, Celery]] = {}


def broker_client(settings: Settings) -> Celery:
    """One client (and its connection pool) per Settings object; tests swap settings freely."""
    entry = _clients.get(id(settings))
    if entry is None or entry[0] is not settings:
        client = Celery("zerodata-api")
        client.conf.update(celery_config(settings))
        entry = _clients[id(settings)] = (settings, client)
    return entry[1]


def enqueue_job(job_id: str, queue: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    broker_client(settings).send_task(TASK_NAME, args=[job_id], queue=queue)
