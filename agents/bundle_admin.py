"""Changing a bundle on purpose: sign it (ed25519) or migrate a format-1 bundle to plain data.

Both work on a verified working copy of the bundle folder or zip and replace it only when the
result verifies (:func:`migrate_bundle` also loads it); see :mod:`coinrl.agents.bundle` for
the layout and :mod:`coinrl.agents.signing` for the keys.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coinrl.pipeline.errors import DataError

from .bundle import (
    BUNDLE_VERSION,
    MANIFEST,
    MODEL_FILE,
    REQUIRED_FILES,
    _load_dir,
    _unzip,
    _write_json,
    _zip_folder,
    sha256_file,
    verify_bundle,
)
from .model_io import strip_pickled
from .signing import SIGNATURE_FILE, load_private_key, sign_manifest

logger = logging.getLogger(__name__)



@contextmanager
def _edited(path: Path, out: Path | None = None) -> Iterator[Path]:
    """A working copy of a bundle folder or zip; on success it replaces ``out`` (or ``path``)."""
    dest = out or path
    if not (path.is_dir() or (path.is_file() and zipfile.is_zipfile(path))):
        raise DataError(f"{path} is neither a bundle folder nor a bundle zip")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        work = tmp / "bundle"
        if path.is_dir():
            shutil.copytree(path, work)
        else:
            work.mkdir()
            _unzip(path, work)
        yield work
        if dest.suffix == ".zip":
            _zip_folder(work, dest)
        else:
            if dest.exists():
                os.replace(dest, tmp / "old")
            os.replace(work, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sign_bundle(filename: str | Path, key_file: str | Path) -> dict[str, Any]:
    """Sign a bundle folder or zip in place with the ed25519 key in ``key_file``.

    The bundle is verified and loaded first (a damaged bundle, or one holding pickled objects,
    is never signed); the manifest then records the signer and ``signature.json`` holds the
    signature over its bytes.

    Returns:
        The signature record (``key_id``, ``public_key``, ``signature``, ...).

    Raises:
        DataError: not a bundle, files that fail their sha256, or a bundle that does not load.
        ConfigError: an unusable key file.
    """
    key = load_private_key(key_file)
    path = Path(filename)
    with _edited(path) as work:
        verify_bundle(work)
        _load_dir(work, "cpu", allow_version_mismatch=True)  # only a bundle that loads as data
        (work / SIGNATURE_FILE).unlink(missing_ok=True)
        return sign_manifest(work, key)


def migrate_bundle(filename: str | Path, out: str | Path | None = None) -> list[str]:
    """Rewrite a format-1 bundle (pickled fields in ``model.zip``) as a plain-data bundle.

    The pickled fields are dropped UNREAD (nothing is unpickled); the model is rebuilt from
    the bundle's config and checked to load with :func:`load_model` before anything is
    replaced. A signature does not survive (the manifest changes): sign it again.

    Args:
        filename: the bundle folder or zip.
        out: where to write the migrated bundle (default: replace ``filename``).

    Returns:
        The names of the pickled fields dropped (empty: the bundle was already plain data).

    Raises:
        DataError: not a bundle, files that fail their sha256, or a model that does not
            rebuild from its config.
    """
    path = Path(filename)
    with _edited(path, Path(out) if out is not None else None) as work:
        manifest = verify_bundle(work)
        dropped = strip_pickled(work / MODEL_FILE, work / MODEL_FILE)
        manifest["version"] = BUNDLE_VERSION
        manifest.pop("signer", None)
        manifest["files"] = {name: sha256_file(work / name) for name in REQUIRED_FILES}
        if (work / SIGNATURE_FILE).is_file():
            logger.warning("migrate: %s was signed; the signature is dropped, sign it again", path)
            (work / SIGNATURE_FILE).unlink()
        _write_json(work / MANIFEST, manifest)
        _load_dir(work, "cpu", allow_version_mismatch=True)
    logger.info("migrated bundle path=%s dropped_pickled_fields=%s", out or path, dropped)
    return dropped


__all__ = ["migrate_bundle", "sign_bundle"]
