"""The base of the feature kinds: candle arrays with shared inputs, and the kind interface.

Kept apart from :mod:`.features` so kinds with their own module (:mod:`.hmm`) can subclass it.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import Field

from .config import FrozenModel

F64 = npt.NDArray[np.float64]

Window = Annotated[int, Field(ge=2, le=100_000)]
"""A rolling window in bars."""


class Bars:
    """Candle arrays plus lazily computed shared inputs (log close, 1-bar log returns)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.ts_ms = frame["ts_ms"].to_numpy(dtype=np.int64)
        self.open = frame["open"].to_numpy(dtype=np.float64)
        self.high = frame["high"].to_numpy(dtype=np.float64)
        self.low = frame["low"].to_numpy(dtype=np.float64)
        self.close = frame["close"].to_numpy(dtype=np.float64)
        self.volume = frame["volume"].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self.close)

    @cached_property
    def close_s(self) -> pd.Series:
        return pd.Series(self.close)

    @cached_property
    def log_close(self) -> F64:
        return np.log(self.close)

    @cached_property
    def log_ret_1(self) -> F64:
        out = np.empty(len(self.close))
        out[0] = np.nan
        np.subtract(self.log_close[1:], self.log_close[:-1], out=out[1:])
        return out


class FeatureKind(FrozenModel):
    """Base of the feature kinds: column names, warm-up and a causal computation."""

    def output_names(self) -> tuple[str, ...]:
        """Deterministic names of the columns this entry produces."""
        raise NotImplementedError

    def warmup(self) -> int:
        """Leading bars whose values are undefined or still depend on the series' start."""
        raise NotImplementedError

    def compute(self, bars: Bars) -> dict[str, F64]:
        """Columns (float64, full length, NaN allowed inside the warm-up)."""
        raise NotImplementedError


__all__ = ["F64", "Bars", "FeatureKind", "Window"]
