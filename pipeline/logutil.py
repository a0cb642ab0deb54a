"""Logging setup used by the CLI and scripts (library modules only call ``getLogger``)."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

METRICS_LOGGER = "coinrl.agents.metrics"
"""The logger of the training metric dumps (``agents.tracking.LoggingWriter``)."""
_FMT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(verbosity: int = 0) -> None:
    """Configure root logging: -1 quiet (warnings), 0 info, >=1 debug (console levels).

    At 0 and below the console leaves out the training metric dumps (logger
    ``coinrl.agents.metrics``); they still reach the run's log file, ``progress.csv`` and W&B.

    Args:
        verbosity: net count of ``-v`` minus ``-q`` flags from the CLI.
    """
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(_FMT, datefmt="%Y-%m-%dT%H:%M:%S"))
    handler.setLevel(level)
    if verbosity < 1:  # metric dumps go to the run's log file, CSV and W&B; -v shows them here
        handler.addFilter(lambda record: not record.name.startswith(METRICS_LOGGER))
    # the root passes INFO on, so a run's log file (train.log) is complete whatever the console shows
    logging.basicConfig(level=min(level, logging.INFO), handlers=[handler], force=True)
    # Third-party chatter stays at warning unless asked for with -vv.
    if verbosity < 2:
        for name in ("ccxt", "urllib3", "aiohttp", "matplotlib", "PIL", "apscheduler"):
            logging.getLogger(name).setLevel(logging.WARNING)
