"""Small helpers shared by the API tests."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=4)
def tiny_pt2_bytes(seed: int = 0) -> bytes:
    """A real torch.export archive of the tiny ResNet (exported once per test session and seed). Another seed gives
    a model no other test uploads (uploads deduplicate per tenant), e.g. for a test that deletes it."""
    from tests.tiny_models import export_pt2, tiny_resnet

    with tempfile.TemporaryDirectory() as tmp:
        return export_pt2(tiny_resnet(seed=seed), Path(tmp) / "tiny.pt2").read_bytes()


def upload(client, headers: dict, content: bytes | None = None, filename: str = "tiny.pt2"):
    return client.post("/v1/models", headers=headers,
                       files={"file": (filename, tiny_pt2_bytes() if content is None else content)})


def stored_files(settings) -> list[Path]:
    """Every file in storage and in the upload scratch folder (refused uploads must leave none)."""
    roots = [Path(settings.effective_storage_url.removeprefix("file://")), settings.work_dir / "uploads"]
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def finish_with_artifacts(job_id: str, folder: Path, files: dict[str, bytes]) -> None:
    """Play the worker's part for `job_id`: claim it, store `files` as its artifacts, record success."""
    from app import job_state
    from app.db import new_session
    from app.storage import get_storage

    with new_session() as session:
        claim = job_state.claim_job(session, job_id=job_id, max_attempts=3, stale_after_s=60)
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    get_storage().replace_folder(f"jobs/{job_id}", folder)
    rows = [dict(name=name, size_bytes=len(content), sha256="c" * 64, storage_key=f"jobs/{job_id}/{name}")
            for name, content in files.items()]
    with new_session() as session:
        assert job_state.finish_job(session, job_id=job_id, attempt=claim.attempt, status="succeeded",
                                    artifacts=rows)
