"""``coinrl bundle``: keys, signatures and migration of model bundles.

* ``coinrl bundle keygen KEYFILE``: a new ed25519 key pair (``KEYFILE`` 0600, ``KEYFILE.pub``);
* ``coinrl bundle sign BUNDLE --key KEYFILE``: sign a bundle folder or zip in place;
* ``coinrl bundle verify BUNDLE [--trusted-keys FILE]``: check hashes, signature and that it
  loads (as data: see :mod:`coinrl.agents.bundle`);
* ``coinrl bundle migrate BUNDLE [--out PATH]``: rewrite a bundle of an older coinrl (pickled
  fields in ``model.zip``) as plain data without running anything in it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any

import typer

bundle_app = typer.Typer(
    help="Sign, verify and migrate model bundles (a bundle is data: loading never runs it).",
    no_args_is_help=True,
)


@bundle_app.command("keygen")
def keygen(
    key_file: Annotated[Path, typer.Argument(help="Private key file to create (the public key goes to KEY_FILE.pub).")],
    comment: Annotated[str, typer.Option(help="Comment on the public key line (who signs).")] = "",
) -> None:
    """Create an ed25519 signing key pair (private key readable by you only)."""
    from coinrl.agents.signing import generate_keypair, load_trusted_keys

    from .console import console

    priv, pub = generate_keypair(key_file, comment=comment)
    kid = next(iter(load_trusted_keys(pub)))
    console.print(f"key {kid}: private {priv} (0600, keep it secret), public {pub} (share it)")


@bundle_app.command("sign")
def sign(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip.")],
    key: Annotated[Path, typer.Option("--key", help="Private key file from `coinrl bundle keygen`.")],
) -> None:
    """Sign a bundle in place: the manifest records the signer, signature.json holds the signature."""
    from coinrl.agents.bundle_admin import sign_bundle

    from .console import console

    record = sign_bundle(bundle, key)
    console.print(f"signed {bundle} with key {record['key_id']}")


@bundle_app.command("verify")
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip.")],
    trusted_keys: Annotated[Path | None, typer.Option(
        "--trusted-keys", help="File of trusted public keys (.pub lines): require a signature by one.")] = None,
) -> None:
    """Check a bundle's hashes (and signature) and that it loads; exit 2 when it does not."""
    from coinrl.agents.bundle import load_model
    from coinrl.pipeline.errors import DataError

    from .console import console

    signer = _signer(bundle)
    keys: Any = trusted_keys
    if trusted_keys is None and signer:  # integrity only: its own key, not a trusted one
        try:
            keys = {signer["key_id"]: base64.b64decode(signer["public_key"], validate=True)}
        except ValueError as e:
            raise DataError(f"{bundle}: the signer's key in its manifest is not base64") from e
    agent = load_model(bundle, trusted_keys=keys, allow_version_mismatch=True)
    if trusted_keys is not None:
        how = f"signed by trusted key {signer['key_id']}"
    elif signer:
        how = (f"signed by key {signer['key_id']}, signature valid (the key is not checked: "
               "pass --trusted-keys)")
    else:
        how = "unsigned"
    console.print(f"ok: {bundle} ({agent.algo}), files match the manifest, {how}")


@bundle_app.command("migrate")
def migrate(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip from an older coinrl.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of replacing BUNDLE.")] = None,
) -> None:
    """Rewrite an older bundle as plain data (its pickled fields are dropped unread)."""
    from coinrl.agents.bundle_admin import migrate_bundle

    from .console import console

    dropped = migrate_bundle(bundle, out)
    dest = out or bundle
    if dropped:
        console.print(f"migrated {bundle} -> {dest}: dropped pickled fields {', '.join(dropped)} unread")
    else:
        console.print(f"{bundle} holds no pickled field; rewritten as {dest}")


def _signer(bundle: Path) -> dict[str, str]:
    """The signer a bundle's manifest records (empty when unsigned or unreadable)."""
    import json
    import zipfile

    try:
        if bundle.is_dir():
            text = (bundle / "manifest.json").read_text(encoding="utf-8")
        else:
            with zipfile.ZipFile(bundle) as zf:
                text = zf.read("manifest.json").decode("utf-8")
        signer = json.loads(text).get("signer") or {}
    except (OSError, KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return {}
    ok = isinstance(signer, dict) and all(isinstance(signer.get(k), str) for k in ("key_id", "public_key"))
    return {k: str(v) for k, v in signer.items()} if ok else {}


def register(app: typer.Typer) -> None:
    """Add the ``bundle`` group to the ``coinrl`` app."""
    app.add_typer(bundle_app, name="bundle")


__all__ = ["bundle_app", "register"]
