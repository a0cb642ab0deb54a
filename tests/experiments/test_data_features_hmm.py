"""``coinrl data features`` with an ``hmm_regime`` spec fits it on the training rows first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from coinrl.experiments.cli import app

runner = CliRunner()


def test_features_command_fits_hmm_regime_on_training_rows(tmp_path: Path) -> None:
    store = tmp_path / "d"
    assert runner.invoke(app, ["data", "ingest", "--sample", "--out", str(store)]).exit_code == 0
    src = next(store.glob("*.parquet"))
    spec = tmp_path / "spec.yaml"
    spec.write_text("features:\n  - {kind: hmm_regime, window: 48, n_iter: 10}\n")
    out = tmp_path / "f.parquet"
    res = runner.invoke(app, ["data", "features", str(src), "--spec", str(spec), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "fitted on the default split's training rows" in res.output
    probs = pd.read_parquet(out).drop(columns=["ts_ms"]).to_numpy()
    assert probs.shape[1] == 2
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
