"""The worker's cache, one folder per model, erased once the model is.

What a job caches is derived from the user's model: synthetic inputs inverted from it, and kernel builds whose
generated code embeds its pruned weights. Deleting the model must delete those on every worker too, and the API
cannot reach a worker's disk. So each job caches under `<cache>/models/<model id>/` (repeated jobs of a model still
reuse it; tenants never share entries, where a fast cache hit would tell one that another uploaded the same
model), and every worker's sweep removes the folders of models that are no longer in the database.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import StoredModel

log = logging.getLogger(__name__)
MODELS_FOLDER = "models"


def model_cache_dir(cache_root: Path, model_id: str) -> Path:
    return Path(cache_root) / MODELS_FOLDER / model_id


def purge_erased_models(cache_root: Path, session: Session) -> list[str]:
    """Remove the cache folders of models the database no longer holds; returns their ids. A model with a queued or
    running job cannot be deleted (app/erasure.py), so no job is writing into a folder removed here."""
    folder = Path(cache_root) / MODELS_FOLDER
    try:
        names = [p.name for p in folder.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []
    if not names:
        return []
    kept = set(session.scalars(select(StoredModel.id).where(StoredModel.id.in_(names))))
    erased = sorted(set(names) - kept)
    for name in erased:
        shutil.rmtree(folder / name, ignore_errors=True)
        log.info("removed the cache of erased model %s", name)
    return erased
