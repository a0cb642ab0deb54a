"""A bundle or a checkpoint is data: loading one never runs code in it.

A crafted file (a pickled ``os.system`` call put where SB3 keeps a cloudpickled field, the
manifest re-hashed so the checksums agree) is refused and its payload never runs; a damaged
file is one clear :class:`DataError`; an ordinary bundle gives bit-identical actions to what
SB3's own (unpickling) loader gives; signatures: unsigned, untrusted and tampered bundles are
refused when trusted keys are given.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.bundle import (
    MANIFEST,
    MODEL_FILE,
    load_model,
    save_model,
)
from coinrl.agents.bundle_admin import migrate_bundle, sign_bundle
from coinrl.agents.config import TrainConfig
from coinrl.agents.model_io import SERIALIZED, read_model
from coinrl.agents.rollout import rollout_policy
from coinrl.agents.signing import SIGNATURE_FILE, generate_keypair
from coinrl.agents.train import RNG_FILE, latest_checkpoint, train_model
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.splits import PreparedData

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundle_helpers import (  # noqa: E402
    _Payload,
    crafted_bundle,
    edit_model_zip,
    old_format_bundle,
    payload_b64,
    plant_payload,
    rehash,
)


@pytest.fixture(scope="module")
def dqn_agent(planted: PreparedData) -> TrainedAgent:
    cfg = TrainConfig.model_validate({
        "algo": "dqn", "total_timesteps": 1024, "n_envs": 8, "seed": 0, "eval_every_steps": 0,
        "checkpoint_every_steps": 0, "early_stopping_patience": None,
        "dqn": {"learning_starts": 256, "buffer_size": 4096, "batch_size": 64},
    })
    return train_model(planted, cfg, EnvConfig(window=8, episode_length_bars=256))


def test_the_planted_payload_would_run_if_unpickled(tmp_path: Path) -> None:
    # proves the tests below can fail: SB3's own loader would create the marker
    marker = tmp_path / "proof"
    pickle.loads(base64.b64decode(payload_b64(marker)))  # noqa: S301  (the test's own payload)
    assert marker.exists()


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_crafted_bundle_is_refused_and_its_payload_never_runs(
    trained: TrainedAgent, tmp_path: Path, zipped: bool
) -> None:
    marker = tmp_path / "MARKER"
    bundle = crafted_bundle(trained, tmp_path / "bundle", marker)
    target: Path = bundle
    if zipped:
        target = tmp_path / "bundle.zip"
        with zipfile.ZipFile(target, "w") as zf:
            for p in bundle.iterdir():
                zf.write(p, arcname=p.name)
    with pytest.raises(DataError, match="pickled Python objects .*observation_space.*bundle migrate") as err:
        load_model(target)
    assert f"`coinrl bundle migrate {target}`" in str(err.value)  # the path the user passed
    assert not marker.exists()


@pytest.mark.slow
def test_an_old_format_bundle_with_a_payload_is_refused_and_migrates_without_running_it(
    trained: TrainedAgent, planted: PreparedData, tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    bundle = old_format_bundle(trained, tmp_path / "old")
    plant_payload(bundle / MODEL_FILE, marker, field="lr_schedule")
    rehash(bundle)
    with pytest.raises(DataError, match="pickled"):
        load_model(bundle)
    dropped = migrate_bundle(bundle, tmp_path / "migrated")
    assert "lr_schedule" in dropped
    assert "observation_space" in dropped
    loaded = load_model(tmp_path / "migrated")
    np.testing.assert_array_equal(
        rollout_policy(loaded.model, planted.test, loaded.env_config).actions,
        rollout_policy(trained.model, planted.test, trained.env_config).actions,
    )
    assert not marker.exists()


def test_a_pickle_inside_the_weights_file_is_refused(trained: TrainedAgent, tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "MARKER"
    buf = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buf)
    bundle = save_model(trained, tmp_path / "bundle")
    edit_model_zip(bundle / MODEL_FILE, replace={"policy.pth": buf.getvalue()})
    rehash(bundle)
    with pytest.raises(DataError, match=r"policy\.pth is not a plain tensor file"):
        load_model(bundle)
    assert not marker.exists()


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
@pytest.mark.slow
def test_actions_are_bit_identical_to_sb3s_own_loader_on_the_test_split(
    trained: TrainedAgent, dqn_agent: TrainedAgent, planted: PreparedData, tmp_path: Path, algo: str
) -> None:
    agent = trained if algo == "ppo" else dqn_agent
    # the old loader, only here, on a bundle this test wrote itself
    old = old_format_bundle(agent, tmp_path / "old")
    sb3_model = type(agent.model).load(old / MODEL_FILE, device="cpu")
    new = load_model(save_model(agent, tmp_path / "new"))
    migrate_bundle(old, tmp_path / "migrated")
    migrated = load_model(tmp_path / "migrated")
    ref = rollout_policy(sb3_model, planted.test, agent.env_config)
    for loaded in (new, migrated):
        got = rollout_policy(loaded.model, planted.test, loaded.env_config)
        np.testing.assert_array_equal(got.actions, ref.actions)
        np.testing.assert_array_equal(got.equity_quote, ref.equity_quote)
        assert loaded.model.num_timesteps == sb3_model.num_timesteps
        for name, tensor in sb3_model.policy.state_dict().items():
            assert loaded.model.policy.state_dict()[name].equal(tensor), name
    assert len(ref.actions) > 100


def test_new_bundles_hold_no_pickled_field(trained: TrainedAgent, tmp_path: Path) -> None:
    bundle = save_model(trained, tmp_path / "bundle")
    with zipfile.ZipFile(bundle / MODEL_FILE) as zf:
        data = json.loads(zf.read("data"))
    assert not [k for k, v in data.items() if isinstance(v, dict) and SERIALIZED in v]
    assert json.loads((bundle / MANIFEST).read_text())["version"] == 2


@pytest.mark.parametrize(
    "damage",
    ["truncated_zip", "garbage_model", "bad_data_json", "missing_policy", "bad_yaml", "zip_crc"],
)
def test_damaged_bundles_are_one_clear_data_error(
    trained: TrainedAgent, tmp_path: Path, damage: str
) -> None:
    bundle = save_model(trained, tmp_path / "bundle")
    model = bundle / MODEL_FILE
    target: Path = bundle
    if damage == "truncated_zip":
        zipped = save_model(trained, tmp_path / "b.zip")
        raw = zipped.read_bytes()
        zipped.write_bytes(raw[: len(raw) // 2])
        target = zipped
    elif damage == "zip_crc":
        zipped = save_model(trained, tmp_path / "b.zip")
        raw = bytearray(zipped.read_bytes())
        with zipfile.ZipFile(zipped) as zf:
            info = zf.getinfo(MODEL_FILE)
        at = info.header_offset + 30 + len(info.filename) + 40  # inside the compressed bytes
        raw[at] ^= 0xFF
        zipped.write_bytes(bytes(raw))
        target = zipped
    elif damage == "garbage_model":
        model.write_bytes(b"not a zip at all")
    elif damage == "bad_data_json":
        edit_model_zip(model, replace={"data": b"{not json"})
    elif damage == "missing_policy":
        with zipfile.ZipFile(model) as zf:
            entries = {n: zf.read(n) for n in zf.namelist() if n != "policy.pth"}
        with zipfile.ZipFile(model, "w") as zf:
            for n, raw_entry in entries.items():
                zf.writestr(n, raw_entry)
    elif damage == "bad_yaml":
        (bundle / "config.yaml").write_text("env: [unclosed\n")
    if target is bundle:
        rehash(bundle)
    with pytest.raises(DataError) as info_:
        load_model(target)
    msg = str(info_.value)
    assert "\n" not in msg
    assert "damaged" in msg or "does not match" in msg or "not a readable" in msg, msg


def test_weights_that_do_not_fit_the_config_are_refused(trained: TrainedAgent, tmp_path: Path) -> None:
    bundle = save_model(trained, tmp_path / "bundle")
    cfg = (bundle / "config.yaml").read_text()
    wider = cfg.replace("net_arch:\n  - 64\n  - 64", "net_arch:\n  - 32")
    assert wider != cfg
    (bundle / "config.yaml").write_text(wider)
    rehash(bundle)
    with pytest.raises(DataError, match="weights do not fit"):
        load_model(bundle)


# --------------------------------------------------------------------------- checkpoints


def _ckpt_run(planted: PreparedData, train_config: Any, small_env: EnvConfig, run: Path) -> Path:
    train_model(planted, train_config(total_timesteps=1024, checkpoint_every_steps=512),
                small_env, out_dir=run)
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    return ckpt


@pytest.mark.slow
def test_checkpoints_hold_no_pickle(
    planted: PreparedData, train_config: Any, small_env: EnvConfig, tmp_path: Path
) -> None:
    ckpt = _ckpt_run(planted, train_config, small_env, tmp_path)
    assert json.loads((ckpt / RNG_FILE).read_text())["numpy"]["kind"] == "MT19937"
    assert not list(tmp_path.rglob("*.pkl"))
    with zipfile.ZipFile(ckpt / MODEL_FILE) as zf:
        assert SERIALIZED not in zf.read("data").decode()


@pytest.mark.slow
def test_crafted_checkpoint_is_refused_on_resume_and_its_payload_never_runs(
    planted: PreparedData, train_config: Any, small_env: EnvConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    ckpt = _ckpt_run(planted, train_config, small_env, tmp_path / "run")
    plant_payload(ckpt / MODEL_FILE, marker, field="lr_schedule")
    with pytest.raises(DataError, match="pickled objects .*lr_schedule.*never unpickles a run folder"):
        train_model(planted, train_config(total_timesteps=2048, checkpoint_every_steps=512),
                    small_env, out_dir=tmp_path / "run", resume=True)
    assert not marker.exists()
    (ckpt / RNG_FILE).write_text("{broken")
    with pytest.raises(DataError, match="unreadable"):
        train_model(planted, train_config(total_timesteps=2048, checkpoint_every_steps=512),
                    small_env, out_dir=tmp_path / "run", resume=True)


@pytest.mark.slow
def test_dqn_checkpoint_resumes_its_replay_buffer_from_npz(
    planted: PreparedData, tmp_path: Path
) -> None:
    base = {
        "algo": "dqn", "n_envs": 8, "seed": 0, "eval_every_steps": 0,
        "early_stopping_patience": None, "checkpoint_every_steps": 512,
        "dqn": {"learning_starts": 256, "buffer_size": 4096, "batch_size": 64},
    }
    if "save_replay_buffer" in TrainConfig.model_fields:
        base["save_replay_buffer"] = True
    env = EnvConfig(window=8, episode_length_bars=256)
    first = train_model(planted, TrainConfig.model_validate({**base, "total_timesteps": 1024}), env,
                        out_dir=tmp_path)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None
    npz = ckpt / "replay_buffer.npz"
    assert npz.is_file()
    cfg = TrainConfig.model_validate({**base, "total_timesteps": 1024})
    from coinrl.agents.model_io import load_replay_buffer
    from coinrl.agents.train import make_vec_env

    fresh = read_model(ckpt / MODEL_FILE, cfg, env=make_vec_env(planted.train, env, 8))
    load_replay_buffer(fresh, npz)
    before = first.model.replay_buffer  # type: ignore[attr-defined]
    after = fresh.replay_buffer  # type: ignore[attr-defined]
    assert (after.pos, after.full) == (before.pos, before.full)
    np.testing.assert_array_equal(after.observations, before.observations)
    np.testing.assert_array_equal(after.rewards, before.rewards)
    # an object array (which only pickle can read) is refused
    np.savez(npz, observations=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="not a readable replay buffer"):
        load_replay_buffer(fresh, npz)


# --------------------------------------------------------------------------- signatures


@pytest.mark.slow
def test_trusted_keys_refuse_unsigned_untrusted_and_tampered_bundles(
    trained: TrainedAgent, tmp_path: Path
) -> None:
    _, mine = generate_keypair(tmp_path / "keys" / "me.key")
    other_key, other = generate_keypair(tmp_path / "keys" / "other.key")
    assert (tmp_path / "keys" / "me.key").stat().st_mode & 0o777 == 0o600
    bundle = save_model(trained, tmp_path / "bundle")
    with pytest.raises(DataError, match="not signed"):
        load_model(bundle, trusted_keys=mine)
    record = sign_bundle(bundle, tmp_path / "keys" / "me.key")
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["signer"]["key_id"] == record["key_id"]
    assert SIGNATURE_FILE not in manifest["files"]
    assert load_model(bundle, trusted_keys=mine).algo == "ppo"
    with pytest.raises(DataError, match="not one of the 1 trusted keys"):
        load_model(bundle, trusted_keys=other)
    # signed by another key: refused by mine
    theirs = shutil.copytree(bundle, tmp_path / "theirs")
    sign_bundle(theirs, other_key)
    with pytest.raises(DataError, match="not one of the 1 trusted keys"):
        load_model(theirs, trusted_keys=mine)
    # tampered after signing, manifest re-hashed: the signature no longer matches
    tampered = shutil.copytree(bundle, tmp_path / "tampered")
    (tampered / "training.json").write_text('{"history": [], "info": {"note": "edited"}}')
    rehash(tampered)
    manifest = json.loads((tampered / MANIFEST).read_text())
    manifest.update(signer=json.loads((bundle / MANIFEST).read_text())["signer"])
    (tampered / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="modified after"):
        load_model(tampered, trusted_keys=mine)
    # tampered without re-hashing: the hash check catches it
    raw = tmp_path / "raw"
    shutil.copytree(bundle, raw)
    (raw / "training.json").write_text("{}")
    with pytest.raises(DataError, match="do not match the sha256"):
        load_model(raw, trusted_keys=mine)


@pytest.mark.slow
def test_signing_a_zip_keeps_it_loadable_and_keys_are_never_overwritten(
    trained: TrainedAgent, tmp_path: Path
) -> None:
    _, pub = generate_keypair(tmp_path / "me.key")
    with pytest.raises(ConfigError, match="never overwritten"):
        generate_keypair(tmp_path / "me.key")
    zipped = save_model(trained, tmp_path / "b.zip")
    sign_bundle(zipped, tmp_path / "me.key")
    with zipfile.ZipFile(zipped) as zf:
        assert SIGNATURE_FILE in zf.namelist()
    assert load_model(zipped, trusted_keys=pub).algo == "ppo"
    (tmp_path / "me.key").chmod(0o644)
    with pytest.raises(ConfigError, match="too open"):
        sign_bundle(zipped, tmp_path / "me.key")
    bad = tmp_path / "trusted.txt"
    bad.write_text("ssh-rsa AAAA me\n")
    with pytest.raises(ConfigError, match=r"trusted.txt:1 is not a key line"):
        load_model(zipped, trusted_keys=bad)


@pytest.mark.slow
def test_only_plain_bundles_are_signed_and_migrating_drops_a_signature(
    trained: TrainedAgent, tmp_path: Path
) -> None:
    generate_keypair(tmp_path / "me.key")
    old = old_format_bundle(trained, tmp_path / "old")
    with pytest.raises(DataError, match="pickled"):
        sign_bundle(old, tmp_path / "me.key")
    assert not (old / SIGNATURE_FILE).exists()
    bundle = save_model(trained, tmp_path / "new")
    sign_bundle(bundle, tmp_path / "me.key")
    assert migrate_bundle(bundle) == []
    assert not (bundle / SIGNATURE_FILE).exists()
    assert "signer" not in json.loads((bundle / MANIFEST).read_text())
    assert load_model(bundle).algo == "ppo"


@pytest.mark.parametrize(
    ("algo", "env_kw", "extra"),
    [
        ("a2c", {}, {}),
        ("sac", {"action": "continuous"},
         {"sac": {"learning_starts": 128, "buffer_size": 2048, "batch_size": 64}}),
        ("recurrent_ppo", {}, {"recurrent_ppo": {"n_steps": 64, "batch_size": 256, "n_epochs": 1,
                                                 "lstm_hidden_size": 16}}),
    ],
)
@pytest.mark.slow
def test_every_algorithm_round_trips_as_plain_data(
    planted: PreparedData, tmp_path: Path, algo: str, env_kw: dict[str, Any], extra: dict[str, Any]
) -> None:
    if algo == "recurrent_ppo":
        pytest.importorskip("sb3_contrib")
    env = EnvConfig(window=8, episode_length_bars=256, **env_kw)
    cfg = TrainConfig.model_validate({
        "algo": algo, "total_timesteps": 512, "n_envs": 8, "seed": 0, "eval_every_steps": 0,
        "checkpoint_every_steps": 0, "early_stopping_patience": None, **extra,
    })
    agent = train_model(planted, cfg, env)
    loaded = load_model(save_model(agent, tmp_path / "bundle"))
    a = rollout_policy(agent.model, planted.test, env)
    b = rollout_policy(loaded.model, planted.test, env)
    np.testing.assert_array_equal(a.actions, b.actions)
    for name, tensor in agent.model.policy.state_dict().items():
        assert loaded.model.policy.state_dict()[name].equal(tensor), name
