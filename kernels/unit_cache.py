"""Compiled translation units kept for later builds of overlapping sources.

The tuner builds the library of all same-shape layers, then the package's final library, which holds those same
layers plus a few more: without this cache the final build compiled ~90% of its code a second time (ResNet-56:
two ~3.5 MB units, most of the compile stage). A unit is reused when every layer it holds is in the new source
(same prelude, flags and compiler); only the remaining layers are compiled.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def mark_used(path: Path) -> None:
    """Refresh the mtime of a reused cache file: a cache trimmed by age then drops what no build needed lately."""
    try:
        os.utime(path)
    except OSError:
        pass  # read-only or already gone: only the trim order suffers


class UnitCache:
    """Object files under `root`/<tag>, each with a JSON list of the digests of the layers it compiled.
    `tag` names the prelude + flags + compiler the objects were built with."""

    def __init__(self, root: Path, tag: str):
        self.dir = Path(root) / tag[:24]

    def cover(self, layers: list[str]) -> tuple[list[Path], list[str]]:
        """Cached objects that together hold some of `layers` (each layer at most once), and the layers left."""
        wanted = {digest(layer): layer for layer in layers}
        objects: list[Path] = []
        for held, obj in sorted(self._entries(), key=lambda entry: -len(entry[0])):  # biggest units first
            if held and held <= wanted.keys() and obj.is_file():
                objects.append(obj)
                mark_used(obj)
                mark_used(obj.with_suffix(".json"))
                for key in held:
                    del wanted[key]
        return objects, list(wanted.values())

    def store(self, obj: Path, layers: list[str]) -> None:
        """Keep `obj` (compiled from `layers`); the listing is written last, so readers never see half an entry."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            name = digest("\0".join(digest(layer) for layer in layers))[:24]
            os.replace(obj, self.dir / f"{name}.o")
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump([digest(layer) for layer in layers], handle)
            os.replace(tmp, self.dir / f"{name}.json")
        except OSError:
            pass  # a cache that cannot be written only costs a later build its reuse

    def _entries(self) -> list[tuple[set[str], Path]]:
        entries = []
        for listing in self.dir.glob("*.json") if self.dir.is_dir() else []:
            try:
                entries.append((set(json.loads(listing.read_text())), listing.with_suffix(".o")))
            except (OSError, ValueError, TypeError):
                continue  # a damaged listing is ignored; its layers are compiled again
        return entries
