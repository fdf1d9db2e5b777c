"""The model registry: ``models/<name>/<version>/`` directories, and which version is ``latest``.

A topology names its model by name and version; ``version: latest`` means the version written in
the pointer file ``models/<name>/LATEST`` (one line, e.g. ``3``), and where there is none yet, the
highest numbered version directory holding a ``manifest.json``. The pointer is moved only by
``streamscore model promote NAME VERSION``, which first checks that the version loads (manifest,
checksum) and, given ``--topology``, that it fits that topology; the write is atomic (a temporary
file renamed over the pointer), so a worker polling it never reads half a pointer. Pinning a
version in the topology (``version: "2"``) ignores the pointer; editing the topology's version is
the other way to move a worker (both are watched, ``workers/serving/reload.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from workers.model.manifest import MANIFEST_FILE, ManifestError, load_manifest

LATEST = "latest"
POINTER_FILE = "LATEST"


class RegistryError(ManifestError):
    """A version cannot be resolved or promoted; the message says what to do."""


def versions(models_dir: Path, name: str) -> list[str]:
    """Numbered version directories of ``name`` that hold a manifest, in increasing order."""
    base = Path(models_dir) / name
    if not base.is_dir():
        return []
    found = [p.name for p in base.iterdir()
             if p.is_dir() and p.name.isdigit() and (p / MANIFEST_FILE).is_file()]
    return sorted(found, key=int)


def pointer_path(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / name / POINTER_FILE


def read_pointer(models_dir: Path, name: str) -> str | None:
    try:
        text = pointer_path(models_dir, name).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def resolve(models_dir: Path, name: str, version: str) -> str:
    """The version directory a topology's ``(name, version)`` means now."""
    if version != LATEST:
        return version
    pointed = read_pointer(models_dir, name)
    if pointed is not None:
        return pointed
    found = versions(models_dir, name)
    if not found:
        raise RegistryError(
            f"{Path(models_dir) / name}: no version of model {name!r} to serve as `latest` — train or "
            "register one, or name a version in the topology")
    return found[-1]


def promote(models_dir: Path, name: str, version: str) -> Path:
    """Point ``latest`` of ``name`` at ``version`` after checking that it loads; returns the pointer."""
    load_manifest(models_dir, name, version)  # manifest valid and checksum matching, or ManifestError
    path = pointer_path(models_dir, name)
    tmp = path.with_name(f".{POINTER_FILE}.{os.getpid()}.tmp")
    tmp.write_text(f"{version}\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="streamscore model promote",
        description="Point a model's `latest` at a version; workers serving `version: latest` swap to it.")
    ap.add_argument("name", help="model name (models/<name>/)")
    ap.add_argument("version", help="version directory (models/<name>/<version>/)")
    ap.add_argument("--topology", default=None, help="also check that the version fits this topology")
    ap.add_argument("--models-dir", type=Path, default=None, help="default: settings' models_dir")
    args = ap.parse_args(argv)
    from workers.settings import get_settings

    models_dir = args.models_dir or get_settings().models_dir
    try:
        if args.topology is not None:
            from workers.model.fit import check_fit
            from workers.topology import load_topology

            check_fit(load_manifest(models_dir, args.name, args.version), load_topology(args.topology))
        before = read_pointer(models_dir, args.name)
        path = promote(models_dir, args.name, args.version)
    except (ManifestError, ValueError) as e:
        print(f"promote refused: {e}", file=sys.stderr)
        return 1
    print(f"{args.name}: latest -> {args.version} (was {before or 'the highest version'}); wrote {path}")
    return 0
