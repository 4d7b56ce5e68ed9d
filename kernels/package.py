"""The package directory: fixed file names, manifest I/O with checks, compact weights, atomic publish.

File names are constants, never read from the manifest, so a hostile manifest cannot point outside
the package. Everything read back is validated before use.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from kernels.errors import KernelError
from kernels.format import CompactConv

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
SOURCE = "kernels.cpp"
LIBRARY = "kernels.so"
GRAPH = "model.pt2"
README = "README.md"
MAX_MANIFEST_BYTES = 8 << 20
MAX_LAYERS = 10_000


class PackageError(KernelError):
    """A package directory is missing files, malformed, tampered with, or cannot be written."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_compact_weights(path: Path, layers: dict[str, CompactConv]) -> None:
    from safetensors.numpy import save_file
    tensors = {}
    for symbol, conv in layers.items():
        for key, array in conv.to_dict().items():
            tensors[f"{symbol}/{key}"] = np.ascontiguousarray(array)
    save_file(tensors, str(path), metadata={"format": "zerodata-compact-conv", "version": str(FORMAT_VERSION)})


def load_compact_weights(path: Path, symbols: list[str]) -> dict[str, CompactConv]:
    """The compact layers named in the manifest, each checked by CompactConv.from_dict."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackageError(f"{path.name} is not a readable safetensors file: {exc}") from None
    layers = {}
    for symbol in symbols:
        prefix = symbol + "/"
        arrays = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        layers[symbol] = CompactConv.from_dict(arrays, name=symbol)
    return layers


def write_manifest(package_dir: Path, manifest: dict) -> None:
    (package_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(package_dir: Path) -> dict:
    package_dir = Path(package_dir)
    path = package_dir / MANIFEST
    if not package_dir.is_dir():
        raise PackageError(f"{package_dir} is not a package directory")
    if not path.is_file():
        raise PackageError(f"{package_dir} has no {MANIFEST}: not a zerodata kernel package")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{MANIFEST} is not valid JSON: {exc}") from None
    _check_manifest(manifest)
    return manifest


def _check_manifest(manifest) -> None:
    def bad(why: str):
        raise PackageError(f"{MANIFEST} is malformed: {why}")
    if not isinstance(manifest, dict):
        bad("top level must be an object")
    if manifest.get("format_version") != FORMAT_VERSION:
        bad(f"format_version {manifest.get('format_version')!r}, this zerodata reads {FORMAT_VERSION}")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) > MAX_LAYERS:
        bad("layers must be a list")
    symbols = set()
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            bad("each layer must be an object with a name")
        if layer.get("kernel") not in ("sparse", "dense"):
            bad(f"layer {layer.get('name')!r}: kernel must be 'sparse' or 'dense'")
        if layer["kernel"] == "sparse":
            if not isinstance(layer.get("symbol"), str) or layer["symbol"] in symbols:
                bad(f"layer {layer['name']!r}: sparse layers need a unique symbol")
            symbols.add(layer["symbol"])
            if not isinstance(layer.get("spec"), dict) or not isinstance(layer.get("tile"), dict):
                bad(f"layer {layer['name']!r}: sparse layers need spec and tile")
    if not isinstance(manifest.get("files"), dict):
        bad("files must map file names to sha256 hashes")


def verify_hash(package_dir: Path, manifest: dict, name: str) -> Path:
    """Path of a package file after checking it exists and matches the manifest's hash."""
    path = Path(package_dir) / name
    expected = manifest["files"].get(name)
    if not path.is_file():
        raise PackageError(f"package file {name} is missing")
    if expected is None:
        raise PackageError(f"{MANIFEST} lists no hash for {name}")
    if sha256_file(path) != expected:
        raise PackageError(f"{name} does not match the hash in {MANIFEST}: the package was modified")
    return path


def new_staging_dir(out_dir: Path) -> Path:
    """A fresh directory next to out_dir (same filesystem, so the final rename is atomic)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def publish(staging: Path, out_dir: Path) -> None:
    """Replace out_dir with staging: readers see the old package or the new one, never half of one."""
    out_dir = Path(out_dir)
    old = None
    if out_dir.exists():
        if not (out_dir / MANIFEST).is_file() and any(out_dir.iterdir()):
            raise PackageError(f"{out_dir} exists and is not a kernel package; refusing to replace it")
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def package_bytes(package_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(package_dir).iterdir() if p.is_file())
