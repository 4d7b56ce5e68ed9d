"""A model's cache folder on a worker is removed by the sweep once the model is deleted, and only then
(real PostgreSQL)."""
from __future__ import annotations

import uuid

from app.db import new_session
from app.models import Job
from worker.model_cache import model_cache_dir, purge_erased_models
from worker.sweeper import sweep_once


def _cached_folder(root, model_id):
    folder = model_cache_dir(root, model_id)
    (folder / "kernels").mkdir(parents=True)
    (folder / "kernels" / "unit.so").write_bytes(b"built from the model's weights")
    return folder


def test_only_folders_of_models_gone_from_the_database_are_removed(queued_job, worker_db):
    with new_session() as session:
        model_id = session.get(Job, queued_job).model_id
    kept = _cached_folder(worker_db.cache_dir, model_id)
    gone = _cached_folder(worker_db.cache_dir, str(uuid.uuid4()))
    with new_session() as session:
        assert purge_erased_models(worker_db.cache_dir, session) == [gone.name]
    assert kept.is_dir() and not gone.exists()


def test_the_sweep_purges_after_the_model_is_erased(queued_job, worker_db):
    from sqlalchemy import update

    from app.erasure import erase_model
    from app.storage import get_storage

    with new_session() as session:
        job = session.get(Job, queued_job)
        model_id = job.model_id
        session.execute(update(Job).where(Job.id == queued_job).values(status="succeeded"))
        session.commit()
    folder = _cached_folder(worker_db.cache_dir, model_id)
    sweep_once(worker_db)
    assert folder.is_dir()  # the model still exists
    with new_session() as session:
        erase_model(session, get_storage(), session.get(Job, queued_job).model)
    sweep_once(worker_db)
    assert not folder.exists()


def test_no_cache_folder_yet_is_nothing_to_do(worker_db):
    with new_session() as session:
        assert purge_erased_models(worker_db.cache_dir, session) == []
