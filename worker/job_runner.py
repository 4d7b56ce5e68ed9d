"""Run one claimed job: fetch the model, call the pipeline, move its output into storage, record the
outcome, send the webhook. Errors become a failed job with a clear message, never a retry loop."""
from __future__ import annotations

import hashlib
import logging
import shutil
import time
import uuid
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from app import job_state
from app.config import Settings
from app.db import new_session
from app.models import Job
from app.storage import get_storage, job_prefix
from worker.cache_trim import trim_cache
from worker.db_progress import DbProgress, LostOwnership
from worker.engine.errors import EngineError
from worker.heartbeat import Heartbeat
from worker.model_cache import model_cache_dir
from worker.progress import JobCancelled

log = logging.getLogger(__name__)
EXTENSIONS = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}
SUMMARY_KEYS = {"compression": ("compression_ratio", "params_before", "params_after", "flops_before", "flops_after"),
                "fidelity": ("top1_agreement", "mean_kl", "output_cosine"),
                "speed": ("speedup_vs_onnxruntime", "speedup_vs_torch", "isa"),
                "sizes": ("model_bytes_before", "model_bytes_after")}


def summarize(report: dict) -> dict:
    """Headline numbers for job lists (the full report stays in report.json)."""
    summary = {}
    for section, keys in SUMMARY_KEYS.items():
        for key in keys:
            value = (report.get(section) or {}).get(key)
            if value is not None:
                summary[key] = value
    return summary


# A job's compression stage gets at most this share of the task's time limit: a large model's job is then cut to
# fit (its synthetic inputs first, worker/engine/synthesis_budget.py) instead of being killed at the limit with
# nothing to show. The rest is for compiling, measuring and storing (a few minutes even for ResNet-50).
COMPRESSION_SHARE_OF_TIME_LIMIT = 0.6


def config_within_time_limit(config: dict, settings: Settings, spent_s: float = 0.0) -> dict:
    """The job's config with time_budget_s no larger than the task's time limit allows (set when absent), minus
    what the task already spent (loading torch and the engine, fetching the model)."""
    limit = max(1.0, settings.task_soft_time_limit_s * COMPRESSION_SHARE_OF_TIME_LIMIT - spent_s)
    asked = config.get("time_budget_s")
    return {**config, "time_budget_s": limit if asked is None else min(float(asked), limit)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_claimed_job(job: Job, attempt: int, settings: Settings) -> str:
    """Returns the job's final status (or "lost" when another attempt took the row over)."""
    started = time.monotonic()
    jobs_dir = settings.work_dir / "jobs"
    for leftover in jobs_dir.glob(f"{job.id}-*"):  # scratch of an earlier attempt whose worker died
        shutil.rmtree(leftover, ignore_errors=True)
    workdir = jobs_dir / f"{job.id}-{attempt}-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True)
    heartbeat = Heartbeat(job.id, attempt, settings.heartbeat_interval_s)
    heartbeat.start()
    progress = DbProgress(job.id, attempt, write_interval_s=settings.progress_write_interval_s)
    storage = get_storage()
    status, error, summary, artifacts = "failed", None, None, []
    try:
        from worker.pipeline import run_pipeline  # torch and the engine load here, inside the time limit

        with storage.fetch(job.model.storage_key) as stored:
            # The engine sees the model under a name with the right extension (the store keys by hash).
            model_path = workdir / f"input{EXTENSIONS.get(job.model.format, '')}"
            model_path.symlink_to(Path(stored).resolve())
            config = config_within_time_limit(job.config, settings, time.monotonic() - started)
            report = run_pipeline(model_path, workdir / "out", config, progress,
                                  cache_dir=model_cache_dir(settings.cache_dir, job.model_id))
        out_dir = workdir / "out"
        artifacts = [dict(name=p.name, size_bytes=p.stat().st_size, sha256=_sha256(p),
                          storage_key=f"{job_prefix(job.id)}/{p.name}") for p in sorted(out_dir.iterdir()) if p.is_file()]
        with new_session() as session:
            if not job_state.still_owned(session, job_id=job.id, attempt=attempt):
                return "lost"
        storage.replace_folder(job_prefix(job.id), out_dir)
        status, summary = "succeeded", summarize(report)
    except LostOwnership:
        log.warning("job %s attempt %d lost its row to another attempt; stopping", job.id, attempt)
        return "lost"
    except JobCancelled:
        status, error = "canceled", None
    except EngineError as exc:
        error = str(exc)
    except SoftTimeLimitExceeded:
        error = f"the job exceeded its time limit of {settings.task_soft_time_limit_s} s"
    except MemoryError:
        error = f"the job ran out of memory (limit {settings.worker_memory_limit_mb} MiB)"
    except Exception as exc:
        log.exception("job %s failed unexpectedly", job.id)
        error = f"internal error: {exc.__class__.__name__}: {exc}"
    finally:
        heartbeat.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        trim_cache(settings.cache_dir, settings.cache_max_bytes)
    with new_session() as session:
        recorded = job_state.finish_job(session, job_id=job.id, attempt=attempt, status=status, error=error,
                                        summary=summary, artifacts=artifacts,
                                        stage_seconds=progress.finished_stage_seconds())
    if not recorded:
        with new_session() as session:
            deleted = session.get(Job, job.id) is None
        if deleted:  # erased by its owner meanwhile: results stored above must not outlive the row
            storage.delete(job_prefix(job.id))
        return "lost"
    _send_webhook(job, status, error, summary, settings)
    return status


def _send_webhook(job: Job, status: str, error: str | None, summary: dict | None, settings: Settings) -> None:
    if not job.webhook_url:
        return
    if not settings.webhook_secret:
        log.warning("job %s has a webhook but WEBHOOK_SECRET is not set; not sending", job.id)
        return
    from worker.webhooks import deliver_job_webhook

    payload = {"event": "job.finished", "job_id": job.id, "model_id": job.model_id, "status": status,
               "error": error, "summary": summary or {}}
    if settings.public_url:
        payload["job_url"] = f"{settings.public_url.rstrip('/')}/v1/jobs/{job.id}"
    deliver_job_webhook(job.webhook_url, payload, settings.webhook_secret, settings=settings)
