"""Helpers of the bundle-trust tests: crafted payloads, re-hashed manifests, old-format bundles."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shlex
import zipfile
from pathlib import Path
from typing import Any

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.bundle import MANIFEST, MODEL_FILE, REQUIRED_FILES, save_model, sha256_file
from coinrl.agents.model_io import SERIALIZED


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what an attacker would put in a bundle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def payload_b64(marker: Path) -> str:
    return base64.b64encode(pickle.dumps(_Payload(marker))).decode()


def rehash(bundle: Path) -> None:
    """Make the manifest agree with the files again (what an attacker can always do)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["files"] = {name: sha256_file(bundle / name) for name in REQUIRED_FILES}
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def edit_model_zip(path: Path, edit_data: Any = None, replace: dict[str, bytes] | None = None) -> None:
    """Rewrite a model zip with its ``data`` JSON edited and/or entries replaced."""
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    if edit_data is not None:
        data = json.loads(entries["data"])
        edit_data(data)
        entries["data"] = json.dumps(data).encode()
    entries.update(replace or {})
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in entries.items():
            zf.writestr(name, raw)


def plant_payload(model_zip: Path, marker: Path, field: str = "observation_space") -> None:
    def edit(data: dict[str, Any]) -> None:
        data[field] = {":type:": "<class 'gymnasium.spaces.box.Box'>", SERIALIZED: payload_b64(marker)}

    edit_model_zip(model_zip, edit)


def old_format_bundle(agent: TrainedAgent, dest: Path) -> Path:
    """A bundle as coinrl wrote it before: SB3's own save (pickled fields), format version 1."""
    save_model(agent, dest)
    agent.model.save(dest / MODEL_FILE)
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["version"] = 1
    (dest / MANIFEST).write_text(json.dumps(manifest))
    rehash(dest)
    return dest


def crafted_bundle(agent: TrainedAgent, dest: Path, marker: Path) -> Path:
    bundle = save_model(agent, dest)
    plant_payload(bundle / MODEL_FILE, marker)
    rehash(bundle)
    return bundle
