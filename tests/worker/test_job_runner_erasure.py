"""A job erased while its worker was still storing results (possible only after the sweep gave the row up):
the worker removes what it stored instead of leaving files no row points to (real PostgreSQL, local storage)."""
from __future__ import annotations

from sqlalchemy import update

from app import job_state
from app.db import new_session
from app.erasure import erase_job
from app.models import Job
from app.storage import get_storage


def test_results_stored_for_an_erased_job_are_removed(queued_job, worker_db, tmp_path, monkeypatch):
    import worker.pipeline
    from worker.job_runner import run_claimed_job

    storage = get_storage()
    model_file = tmp_path / "model.pt2"
    model_file.write_bytes(b"stand-in: the pipeline below never reads it")
    storage.put_file("models/x/y", model_file)

    def pipeline(model_path, out_dir, config, progress, cache_dir=None):
        out_dir.mkdir()
        (out_dir / "report.json").write_text("{}")
        return {}

    real_replace = storage.replace_folder

    def store_after_the_row_is_gone(prefix, folder):
        with new_session() as session:  # the sweep gave the silent job up, then its owner deleted it
            session.execute(update(Job).where(Job.id == queued_job).values(status="failed"))
            session.commit()
            erase_job(session, storage, session.get(Job, queued_job))
        return real_replace(prefix, folder)

    monkeypatch.setattr(worker.pipeline, "run_pipeline", pipeline)
    monkeypatch.setattr(storage, "replace_folder", store_after_the_row_is_gone)
    with new_session() as session:
        claim = job_state.claim_job(session, job_id=queued_job, max_attempts=3, stale_after_s=60)
        job = session.get(Job, queued_job)
        _ = job.model  # loaded while the session is open
    assert run_claimed_job(job, claim.attempt, worker_db) == "lost"
    assert not storage.exists(f"jobs/{queued_job}")
