"""deflate_archive keeps every member's name, order and bytes, and leaves nothing behind on failure."""
import zipfile

import pytest

from worker.engine.formats.zip_deflate import deflate_archive


def test_members_keep_names_order_and_bytes(tmp_path):
    path = tmp_path / "m.pt2"
    members = {"m/version": b"1", "m/data/0": bytes(40000) + b"tail", "m/.data/serialization_id": b"abc"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    stored_size = path.stat().st_size
    deflate_archive(path)
    with zipfile.ZipFile(path) as archive:
        assert [m.filename for m in archive.infolist()] == list(members)
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {name: archive.read(name) for name in members} == members
    assert path.stat().st_size < stored_size / 10
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt2"]


def test_a_damaged_archive_is_left_as_it_was(tmp_path):
    path = tmp_path / "m.pt2"
    path.write_bytes(b"not a zip")
    with pytest.raises(zipfile.BadZipFile):
        deflate_archive(path)
    assert path.read_bytes() == b"not a zip" and [p.name for p in tmp_path.iterdir()] == ["m.pt2"]
