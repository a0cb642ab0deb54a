"""Model bundles: one folder (or zip) that reproduces a trained agent anywhere.

Layout of a bundle folder::

    manifest.json      format, version, algo, fingerprints, sha256 of every other file
                       (and, once signed, the signer: see :mod:`coinrl.agents.signing`)
    model.zip          the SB3 model as plain data: tensors (policy weights, optimiser state)
                       and JSON counters, no pickled field (see :mod:`coinrl.agents.model_io`)
    config.yaml        the full experiment config (secrets scrubbed): retrain with it
    feature_spec.yaml  the FeatureSpec the observations are built from
    normaliser.json    the normaliser fitted on the TRAINING split
    data.json          training-data provenance: source, symbol, timeframe, range, hashes
    versions.json      coinrl, stable-baselines3, torch, gymnasium, numpy, pandas, python, git
    training.json      validation history and outcome of the training run
    portfolio.json     portfolio agents only: the assets (in order), the normaliser of each
                       asset (or the pooled one) and the market-wide features' normaliser,
                       as plain JSON; normaliser.json then holds the first of them

:func:`load_model` refuses (with a :class:`~coinrl.pipeline.errors.DataError` or
:class:`~coinrl.pipeline.errors.ConfigError` saying what differs and what to do) a bundle
whose files do not match the manifest's hashes, whose feature spec no longer has the
fingerprint it was saved with (the feature code changed), whose normaliser does not match its
spec, or that was saved with a different major version of a library the policy depends on.

A bundle may be zipped (``save_model(agent, "run.zip")``); :func:`load_model` takes either.

**A bundle is data, never code.** Loading one parses JSON and YAML (``yaml.safe_load``) and
reads tensors with ``torch.load(weights_only=True)``; the SB3 model is rebuilt from
``config.yaml`` (algorithm, network, hyper-parameters) and the spaces of its env config. A
``model.zip`` that holds pickled objects (SB3's ``":serialized:"`` fields: every bundle of
format version 1 has them) is refused without decoding them; ``coinrl bundle migrate`` rewrites
such a bundle as plain data (:func:`migrate_bundle`). With ``trusted_keys`` a bundle must carry
a valid ed25519 signature by one of those keys (:func:`sign_bundle`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess  # noqa: S404  (git rev-parse only, fixed arguments)
import tempfile
import time
import zipfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from coinrl.envs.config import EnvConfig, PortfolioEnvConfig
from coinrl.pipeline.config import validate_config
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.features import FeatureSpec
from coinrl.pipeline.splits import Normaliser

from .agent import PortfolioSpec, TrainedAgent
from .config import TrainConfig
from .metrics import json_safe
from .model_io import PickledModelError, read_model, write_model
from .redact import scrub_secrets, secret_paths
from .signing import SIGNATURE_FILE, TrustedKeys, load_trusted_keys
from .signing import verify_signature as verify_bundle_signature

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "coinrl.bundle"
BUNDLE_VERSION = 2
"""Version 2: ``model.zip`` holds no pickled field. Version 1 bundles need ``coinrl bundle migrate``."""
READABLE_VERSIONS = (1, 2)
MAX_UNZIPPED_BYTES = 8 << 30
"""Largest total size a zipped bundle may unpack to (a guard against zip bombs)."""
MANIFEST = "manifest.json"
MODEL_FILE = "model.zip"
CONFIG_FILE = "config.yaml"
SPEC_FILE = "feature_spec.yaml"
NORMALISER_FILE = "normaliser.json"
DATA_FILE = "data.json"
VERSIONS_FILE = "versions.json"
TRAINING_FILE = "training.json"
PORTFOLIO_FILE = "portfolio.json"
REQUIRED_FILES = (
    MODEL_FILE, CONFIG_FILE, SPEC_FILE, NORMALISER_FILE, DATA_FILE, VERSIONS_FILE, TRAINING_FILE
)
OPTIONAL_FILES = (PORTFOLIO_FILE,)
"""Files a bundle holds only for some agents (listed in the manifest when present)."""

CHECKED_LIBRARIES = ("stable-baselines3", "torch", "gymnasium", "numpy", "pandas", "coinrl")
"""Libraries whose major version must match between saving and loading."""


# --------------------------------------------------------------------------- helpers


def sha256_file(path: str | Path) -> str:
    """sha256 hex of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(path: str | Path | None = None) -> str | None:
    """The git commit of the checkout holding ``path`` (this package by default), or None."""
    git = shutil.which("git")
    if git is None:
        return None
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(  # noqa: S603  (fixed arguments, no shell)
            [git, "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def library_versions() -> dict[str, Any]:
    """Versions of the libraries a policy's behaviour depends on, plus python and git commit."""
    libs = {name: _dist_version(name) for name in CHECKED_LIBRARIES}
    if _dist_version("sb3-contrib") != "not installed":
        libs["sb3-contrib"] = _dist_version("sb3-contrib")
    return {
        "libraries": libs,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }


def _major(version: str) -> str:
    return version.split(".", 1)[0].split("+", 1)[0]


def check_versions(saved: Mapping[str, Any], *, source: str = "bundle") -> list[str]:
    """Compare saved library versions with the installed ones.

    Returns:
        Human-readable differences of minor versions (warn-worthy).

    Raises:
        ConfigError: a library's major version differs (actions may differ).
    """
    saved_libs = dict(saved.get("libraries", {}))
    major, minor = [], []
    for name in CHECKED_LIBRARIES:
        was = saved_libs.get(name)
        now = _dist_version(name)
        if was is None or was == now:
            continue
        if _major(str(was)) != _major(now):
            major.append(f"{name} {was} (saved) vs {now} (installed)")
        else:
            minor.append(f"{name} {was} -> {now}")
    if major:
        raise ConfigError(
            f"{source} was saved with different major library versions: {'; '.join(major)}. "
            "Install the saved versions (see versions.json) to reproduce its actions, retrain "
            "with the installed ones, or pass allow_version_mismatch=True to load it anyway"
        )
    return minor


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is unreadable or not JSON ({e}); the bundle is damaged") from e


# --------------------------------------------------------------------------- save


def bundle_config(agent: TrainedAgent) -> dict[str, Any]:
    """The experiment config a bundle stores: the agent's full config, env and train sections
    always present, secrets dropped."""
    cfg = dict(agent.experiment_config)
    cfg["env"] = agent.env_config.model_dump(mode="json")
    cfg["train"] = agent.train_config.model_dump(mode="json")
    cfg.setdefault("seed", agent.train_config.seed)
    found = secret_paths(cfg)
    if found:
        logger.warning("bundle: dropping secret config entries %s", found)
    return dict(scrub_secrets(cfg))


def _write_bundle_dir(agent: TrainedAgent, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_model(agent.model, folder / MODEL_FILE)
    cfg = bundle_config(agent)
    _write_text(folder / CONFIG_FILE, yaml.safe_dump(json_safe(cfg), sort_keys=False))
    _write_text(folder / SPEC_FILE, agent.feature_spec.to_yaml())
    _write_json(folder / NORMALISER_FILE, agent.normaliser.to_dict())
    _write_json(folder / DATA_FILE, scrub_secrets(agent.data_info))
    _write_json(folder / VERSIONS_FILE, library_versions())
    _write_json(
        folder / TRAINING_FILE,
        {"history": scrub_secrets(agent.history), "info": scrub_secrets(agent.info)},
    )
    names = list(REQUIRED_FILES)
    if agent.portfolio is not None:
        _write_json(folder / PORTFOLIO_FILE, agent.portfolio.to_dict())
        names.append(PORTFOLIO_FILE)
    files = {name: sha256_file(folder / name) for name in names}
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "algo": agent.algo,
        "created_ts_ms": int(time.time() * 1000),
        "feature_spec_fingerprint": agent.feature_spec.fingerprint(),
        "normaliser_fingerprint": agent.normaliser.fingerprint(),
        "data_fingerprint": agent.data_info.get("data_fingerprint"),
        "files": files,
    }
    if agent.portfolio is not None:
        manifest["kind"] = "portfolio"
        manifest["symbols"] = list(agent.portfolio.symbols)
        manifest["portfolio_fingerprint"] = agent.portfolio.fingerprint()
    _write_json(folder / MANIFEST, manifest)


def save_model(agent: TrainedAgent, filename: str | Path) -> Path:
    """Write ``agent`` as a bundle folder, or a zip of one when ``filename`` ends in ``.zip``.

    The write is atomic: the bundle is built next to its destination and renamed into place,
    replacing an older bundle of the same name.

    Args:
        agent: the trained agent (from :func:`~coinrl.agents.train.train_model` or
            :func:`load_model`).
        filename: destination folder, or ``*.zip`` for a single-file bundle.

    Returns:
        The path written.
    """
    dest = Path(filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if dest.suffix == ".zip":
            inner = tmp / "bundle"
            _write_bundle_dir(agent, inner)
            _zip_folder(inner, dest)
        else:
            inner = tmp / "bundle"
            _write_bundle_dir(agent, inner)
            old = None
            if dest.exists():
                old = tmp / "old"
                os.replace(dest, old)
            os.replace(inner, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("saved bundle path=%s algo=%s", dest, agent.algo)
    return dest


# --------------------------------------------------------------------------- load


def verify_bundle(folder: str | Path) -> dict[str, Any]:
    """Check a bundle folder's manifest and file hashes; return the manifest.

    Raises:
        DataError: missing manifest or file, a hash mismatch (tampered or damaged file).
    """
    root = Path(folder)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise DataError(
            f"{root} is not a coinrl bundle (no {MANIFEST}); pass the folder or zip written by "
            "save_model"
        )
    manifest = _read_json(mpath)
    if not isinstance(manifest, dict):
        raise DataError(f"{root}/{MANIFEST} is not a JSON object; the bundle is damaged")
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("version") not in READABLE_VERSIONS:
        raise DataError(
            f"{root}: unsupported bundle format {manifest.get('format')!r} version "
            f"{manifest.get('version')!r}; this coinrl reads {BUNDLE_FORMAT} "
            f"v{READABLE_VERSIONS[0]}-v{BUNDLE_VERSION}"
        )
    files = manifest.get("files") or {}
    if not isinstance(files, dict) or set(files) - set(REQUIRED_FILES) - set(OPTIONAL_FILES):
        raise DataError(
            f"{root}: {MANIFEST} lists files other than {list(REQUIRED_FILES + OPTIONAL_FILES)}; "
            "not a coinrl bundle"
        )
    wanted = [*REQUIRED_FILES, *(n for n in OPTIONAL_FILES if n in files)]
    missing = [n for n in wanted if n not in files or not (root / n).is_file()]
    if missing:
        raise DataError(f"{root}: bundle files {missing} are missing; re-save or re-download it")
    bad = [n for n, digest in files.items() if sha256_file(root / n) != digest]
    if bad:
        raise DataError(
            f"{root}: {bad} do not match the sha256 in {MANIFEST} (the bundle was modified or "
            "damaged); do not use it: re-download it or retrain with its config.yaml"
        )
    return dict(manifest)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path} is unreadable or not YAML ({first}); the bundle is damaged") from e


def _trusted(keys: str | Path | TrustedKeys | None) -> TrustedKeys | None:
    if keys is None or isinstance(keys, Mapping):
        return keys
    return load_trusted_keys(keys)


def _load_dir(
    root: Path, device: str, allow_version_mismatch: bool, trusted: TrustedKeys | None = None
) -> TrainedAgent:
    if trusted is not None:
        signer = verify_bundle_signature(root, trusted)
        logger.info("bundle path=%s signed by trusted key_id=%s", root, signer["key_id"])
    manifest = verify_bundle(root)
    versions = _read_json(root / VERSIONS_FILE)
    if allow_version_mismatch:
        try:
            minor = check_versions(versions, source=str(root))
        except ConfigError as e:
            logger.warning("bundle version mismatch accepted: %s", e)
            minor = []
    else:
        minor = check_versions(versions, source=str(root))
    if minor:
        logger.warning("bundle path=%s saved with other minor versions: %s", root, minor)
    spec = FeatureSpec.from_yaml((root / SPEC_FILE).read_text(encoding="utf-8"), source=SPEC_FILE)
    if spec.fingerprint() != manifest.get("feature_spec_fingerprint"):
        raise ConfigError(
            f"{root}: the feature spec's fingerprint is {spec.fingerprint()[:12]}..., the bundle "
            f"recorded {str(manifest.get('feature_spec_fingerprint'))[:12]}...: the feature code "
            "changed since it was saved (FEATURES_VERSION) so observations would differ; "
            "retrain with this coinrl or use the coinrl version in versions.json"
        )
    try:
        normaliser = Normaliser.from_dict(_read_json(root / NORMALISER_FILE))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{root}/{NORMALISER_FILE} is malformed ({e!r}); the bundle is damaged") from e
    if normaliser.fingerprint() != manifest.get("normaliser_fingerprint"):
        raise ConfigError(
            f"{root}: normaliser.json does not match the fingerprint in {MANIFEST}; retrain"
        )
    if normaliser.names != spec.feature_names:
        raise ConfigError(
            f"{root}: the normaliser's features {list(normaliser.names)} differ from the spec's "
            f"{list(spec.feature_names)}; the bundle is inconsistent, retrain it"
        )
    cfg = _read_yaml(root / CONFIG_FILE) or {}
    if not isinstance(cfg, dict) or "env" not in cfg or "train" not in cfg:
        raise ConfigError(f"{root}/{CONFIG_FILE} lacks the env and train sections; retrain")
    portfolio = _read_portfolio(root, manifest, spec)
    env_model = EnvConfig if portfolio is None else PortfolioEnvConfig
    env_config = validate_config(env_model, cfg["env"], source=f"{root}/{CONFIG_FILE}:env")
    train_config = validate_config(TrainConfig, cfg["train"], source=f"{root}/{CONFIG_FILE}:train")
    obs_space: Any
    act_space: Any
    if portfolio is not None:
        from .train_portfolio import portfolio_spaces

        assert isinstance(env_config, PortfolioEnvConfig)  # noqa: S101  (validated just above)
        obs_space, act_space = portfolio_spaces(env_config, portfolio, len(spec.feature_names))
    else:
        from coinrl.envs.trading_env import build_spaces

        obs_space, act_space = build_spaces(env_config, len(spec.feature_names))
    try:
        model = read_model(
            root / MODEL_FILE, train_config,
            observation_space=obs_space, action_space=act_space, device=device,
        )
    except PickledModelError as e:
        raise DataError(
            f"{root}/{MODEL_FILE} holds pickled Python objects ({', '.join(e.fields)}) and "
            "coinrl never unpickles a bundle (that would run code); a bundle from an older "
            "coinrl (format v1) is rewritten as plain data, without running them, by "
            f"`coinrl bundle migrate {root}`; otherwise do not use it"
        ) from e
    training = _read_json(root / TRAINING_FILE)
    data = _read_json(root / DATA_FILE)
    logger.info("loaded bundle path=%s algo=%s symbol=%s", root, train_config.algo, data.get("symbol"))
    return TrainedAgent(
        model=model,
        env_config=env_config,
        train_config=train_config,
        feature_spec=spec,
        normaliser=normaliser,
        data_info=data,
        experiment_config=cfg,
        history=list(training.get("history", [])),
        info={**training.get("info", {}), "versions": versions, "bundle": str(root)},
        portfolio=portfolio,
    )


def _read_portfolio(root: Path, manifest: Mapping[str, Any], spec: FeatureSpec) -> PortfolioSpec | None:
    """The bundle's :class:`PortfolioSpec` (None for a one-market bundle), checked against the
    manifest and the feature spec."""
    if PORTFOLIO_FILE not in (manifest.get("files") or {}):
        return None
    portfolio = PortfolioSpec.from_dict(_read_json(root / PORTFOLIO_FILE))
    if portfolio.fingerprint() != manifest.get("portfolio_fingerprint"):
        raise ConfigError(f"{root}: {PORTFOLIO_FILE} does not match the fingerprint in {MANIFEST}; retrain")
    bad = [n for n in portfolio.normalisers if n.names != spec.feature_names]
    if bad:
        raise ConfigError(
            f"{root}: {PORTFOLIO_FILE}'s normalisers cover {list(bad[0].names)}, the spec "
            f"{list(spec.feature_names)}; the bundle is inconsistent, retrain it"
        )
    return portfolio


def _unzip(path: Path, dest: Path) -> None:
    """Unpack a zipped bundle into ``dest`` (paths and sizes checked first)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            unsafe = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
            if unsafe:
                raise DataError(f"{path} holds unsafe paths {unsafe}; it is not a coinrl bundle")
            if sum(i.file_size for i in infos) > MAX_UNZIPPED_BYTES:
                raise DataError(f"{path} unpacks to over {MAX_UNZIPPED_BYTES} bytes; not a bundle")
            zf.extractall(dest)  # noqa: S202  (paths and sizes checked above)
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path} is a damaged zip ({e}); re-download or re-save the bundle") from e


def _zip_folder(folder: Path, dest: Path) -> None:
    """Zip a bundle folder to ``dest`` atomically (the manifest, its files, any signature)."""
    names = [MANIFEST, *REQUIRED_FILES, *(n for n in OPTIONAL_FILES if (folder / n).is_file())]
    if (folder / SIGNATURE_FILE).is_file():
        names.append(SIGNATURE_FILE)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.write(folder / name, arcname=name)
    os.replace(tmp, dest)


def load_model(
    filename: str | Path,
    *,
    device: str = "cpu",
    allow_version_mismatch: bool = False,
    trusted_keys: str | Path | TrustedKeys | None = None,
) -> TrainedAgent:
    """Load and verify a bundle folder or zip written by :func:`save_model`.

    Nothing in the bundle is executed: see the module docstring.

    Args:
        filename: the bundle folder or ``.zip``.
        device: torch device for the policy.
        allow_version_mismatch: load even when a major library version differs (logged).
        trusted_keys: a trusted-keys file (or the parsed keys): the bundle must then be signed
            by one of them (:mod:`coinrl.agents.signing`). None: signatures are not checked.

    Returns:
        The :class:`~coinrl.agents.agent.TrainedAgent`.

    Raises:
        DataError: not a bundle, missing or damaged files, files that fail their sha256, a
            model file holding pickled objects, or (with ``trusted_keys``) an unsigned,
            untrusted or modified-after-signing bundle.
        ConfigError: feature spec/normaliser mismatch, major library version mismatch, a
            config the installed coinrl cannot read, or an unreadable trusted-keys file.
    """
    path = Path(filename)
    trusted = _trusted(trusted_keys)
    if path.is_dir():
        return _load_dir(path, device, allow_version_mismatch, trusted)
    if path.is_file() and zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory(prefix="coinrl-bundle-") as tmp:
            _unzip(path, Path(tmp))
            try:
                agent = _load_dir(Path(tmp), device, allow_version_mismatch, trusted)
            except (DataError, ConfigError) as e:  # name the zip, not the temp folder
                raise type(e)(str(e).replace(str(tmp), str(path))) from e
            agent.info["bundle"] = str(path)
            return agent
    raise DataError(f"{path} is neither a bundle folder nor a bundle zip; pass what save_model wrote")


__all__ = [
    "BUNDLE_FORMAT",
    "CHECKED_LIBRARIES",
    "OPTIONAL_FILES",
    "PORTFOLIO_FILE",
    "bundle_config",
    "check_versions",
    "git_commit",
    "library_versions",
    "load_model",
    "save_model",
    "sha256_file",
    "verify_bundle",
]
