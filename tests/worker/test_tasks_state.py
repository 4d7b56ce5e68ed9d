"""The job row's life cycle under duplicates, dead workers, poison jobs and cancellation (real PostgreSQL)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from app import job_state
from app.db import new_session, utcnow
from app.models import Artifact, Job
from worker.db_progress import DbProgress, LostOwnership
from worker.progress import JobCancelled


def claim(job_id, max_attempts=3, stale_after_s=60.0):
    with new_session() as session:
        return job_state.claim_job(session, job_id=job_id, max_attempts=max_attempts, stale_after_s=stale_after_s)


def load(job_id) -> Job:
    with new_session() as session:
        return session.get(Job, job_id)


def age_heartbeat(job_id, seconds):
    with new_session() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
        session.commit()


def test_duplicate_delivery_does_nothing(queued_job):
    first = claim(queued_job)
    assert (first.outcome, first.attempt) == ("claimed", 1)
    second = claim(queued_job)
    assert second.outcome == "duplicate"
    assert load(queued_job).attempts == 1


def test_message_for_finished_job_does_nothing(queued_job):
    claimed = claim(queued_job)
    with new_session() as session:
        assert job_state.finish_job(session, job_id=queued_job, attempt=claimed.attempt, status="succeeded")
    assert claim(queued_job, stale_after_s=0).outcome == "duplicate"
    assert load(queued_job).status == "succeeded"


def test_stale_running_job_is_requeued_by_sweep_then_reclaimed(queued_job):
    first = claim(queued_job)
    age_heartbeat(queued_job, 100)
    with new_session() as session:
        due = job_state.sweep(session, max_attempts=3, stale_after_s=30, requeue_queued_after_s=3600)
    assert due == [(queued_job, "cpu")]
    assert load(queued_job).status == "queued"
    second = claim(queued_job)
    assert (second.outcome, second.attempt) == ("claimed", 2)
    # The dead first attempt can no longer write progress or finish the job.
    with new_session() as session:
        assert not job_state.write_progress(session, job_id=queued_job, attempt=first.attempt, values={})
        assert not job_state.finish_job(session, job_id=queued_job, attempt=first.attempt, status="failed")


def test_fresh_heartbeat_is_not_swept(queued_job):
    claim(queued_job)
    with new_session() as session:
        assert job_state.sweep(session, max_attempts=3, stale_after_s=30, requeue_queued_after_s=3600) == []
    assert load(queued_job).status == "running"


def test_poison_job_fails_after_max_attempts(queued_job):
    for attempt in (1, 2):
        assert claim(queued_job, max_attempts=2).attempt == attempt
        age_heartbeat(queued_job, 100)
        with new_session() as session:
            job_state.sweep(session, max_attempts=2, stale_after_s=30, requeue_queued_after_s=3600)
    job = load(queued_job)
    assert job.status == "failed" and "gave up after 2 attempts" in job.error
    assert claim(queued_job, max_attempts=2).outcome == "duplicate"


def test_queued_job_over_attempt_limit_is_failed_on_delivery(queued_job):
    with new_session() as session:
        session.execute(update(Job).where(Job.id == queued_job).values(attempts=3))
        session.commit()
    assert claim(queued_job, max_attempts=3).outcome == "poisoned"
    assert load(queued_job).status == "failed"


def test_lost_message_is_resent(queued_job):
    with new_session() as session:
        session.execute(update(Job).where(Job.id == queued_job).values(enqueued_at=utcnow() - timedelta(hours=1)))
        session.commit()
        assert job_state.sweep(session, max_attempts=3, stale_after_s=30, requeue_queued_after_s=60) == [
            (queued_job, "cpu")]
        # Re-sent just now: not again on the next sweep.
        assert job_state.sweep(session, max_attempts=3, stale_after_s=30, requeue_queued_after_s=60) == []


def test_finish_replaces_artifact_rows(queued_job):
    first = claim(queued_job)
    rows = [dict(name="model.pt2", size_bytes=3, sha256="a" * 64, storage_key=f"jobs/{queued_job}/model.pt2")]
    with new_session() as session:
        # An earlier attempt's leftovers must not survive.
        session.add(Artifact(job_id=queued_job, name="old.bin", size_bytes=1, sha256="b" * 64, storage_key="x/y"))
        session.commit()
        assert job_state.finish_job(session, job_id=queued_job, attempt=first.attempt, status="succeeded",
                                    artifacts=rows, summary={"compression_ratio": 2.0})
        job = session.get(Job, queued_job)
        assert [a.name for a in job.artifacts] == ["model.pt2"]
        assert job.progress_percent == 100.0 and job.summary == {"compression_ratio": 2.0}


def test_db_progress_writes_stage_percent_and_eta(queued_job):
    claimed = claim(queued_job)
    progress = DbProgress(queued_job, claimed.attempt, write_interval_s=0.0)
    progress.update("synthesize", 5, 10, "step 5")
    job = load(queued_job)
    assert (job.progress_stage, job.progress_done, job.progress_total, job.progress_detail) == (
        "synthesize", 5, 10, "step 5")
    before = job.progress_percent
    progress.update("prune", 1, 4, "layer1.0.conv1")
    job = load(queued_job)
    assert job.progress_percent > before and job.eta_seconds is not None
    assert "synthesize" in job.stage_seconds
    progress.update("mystery-stage", 1, 2)  # unknown stages never move the percent backwards
    assert load(queued_job).progress_percent == job.progress_percent


def test_db_progress_sees_cancel_and_lost_ownership(queued_job):
    claimed = claim(queued_job)
    progress = DbProgress(queued_job, claimed.attempt, write_interval_s=0.0, cancel_check_interval_s=0.0)
    progress.check_cancelled()
    with new_session() as session:
        job_state_job = session.get(Job, queued_job)
        from app.crud import request_cancel

        request_cancel(session, job=job_state_job)
    with pytest.raises(JobCancelled):
        progress.check_cancelled()
    age_heartbeat(queued_job, 100)
    with new_session() as session:
        job_state.sweep(session, max_attempts=3, stale_after_s=30, requeue_queued_after_s=3600)
    assert load(queued_job).status == "canceled"  # a canceled job whose worker died is not revived
    with pytest.raises(LostOwnership):
        progress.update("prune", 2, 4)


def test_cancel_queued_job_is_immediate(queued_job):
    from app.crud import request_cancel

    with new_session() as session:
        job = request_cancel(session, job=session.get(Job, queued_job))
        assert job.status == "canceled" and job.finished_at is not None
    assert claim(queued_job).outcome == "duplicate"


def test_celery_settings_are_the_safe_ones(worker_db):
    from app.broker import celery_config

    config = celery_config(worker_db)
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1 and config["worker_max_tasks_per_child"] == 1
    assert config["task_soft_time_limit"] < config["task_time_limit"]


def test_time_limits_must_stay_below_visibility_timeout(worker_db):
    from app.broker import celery_config

    bad = worker_db.model_copy(update={"broker_url": "redis://x", "task_hard_time_limit_s": 5000,
                                       "broker_visibility_timeout_s": 4000})
    with pytest.raises(ValueError, match="visibility"):
        celery_config(bad)


def test_job_never_sent_is_sent_after_a_short_grace(queued_job):
    with new_session() as session:
        session.execute(update(Job).where(Job.id == queued_job).values(enqueued_at=None))
        session.commit()
        assert job_state.sweep(session, max_attempts=3, stale_after_s=30, requeue_queued_after_s=3600) == []
        session.execute(update(Job).where(Job.id == queued_job).values(created_at=utcnow() - timedelta(minutes=2)))
        session.commit()
        assert job_state.sweep(session, max_attempts=3, stale_after_s=30, requeue_queued_after_s=3600) == [
            (queued_job, "cpu")]
