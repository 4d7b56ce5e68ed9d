"""Small helpers shared by the API tests."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path


@functools.lru_cache(maxsize=1)
def tiny_pt2_bytes() -> bytes:
    """A real torch.export archive of the tiny ResNet (exported once per test session)."""
    from tests.tiny_models import export_pt2, tiny_resnet

    with tempfile.TemporaryDirectory() as tmp:
        return export_pt2(tiny_resnet(), Path(tmp) / "tiny.pt2").read_bytes()


def upload(client, headers: dict, content: bytes | None = None, filename: str = "tiny.pt2"):
    return client.post("/v1/models", headers=headers,
                       files={"file": (filename, tiny_pt2_bytes() if content is None else content)})


def stored_files(settings) -> list[Path]:
    """Every file in storage and in the upload scratch folder (refused uploads must leave none)."""
    roots = [Path(settings.effective_storage_url.removeprefix("file://")), settings.work_dir / "uploads"]
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]
