"""The trading journal: an append-only SQLite log of everything a trading session did.

One table, ``events``: decisions, risk verdicts, orders (intent before sending, then the
exchange's acknowledgement and updates), fills, balances, reconciliations, model reloads,
halts, errors, start and stop. Each row carries the run id, its kind, the exchange time
(``ts_ms``), the local wall time (``wall_ts_ms``), the decision bar it belongs to
(``bar_ts_ms``), the client order id and fill id where they apply, and a JSON payload.

Durability (it survives ``kill -9`` and power loss up to the last committed row):

* WAL journal mode with ``synchronous=FULL``: every append is its own transaction, fsynced
  before :meth:`Journal.append` returns;
* triggers refuse every ``UPDATE`` and ``DELETE``: rows are never changed or removed, later
  facts are new rows (an order's fill is an ``order_update`` row, not an edit of the ``order``);
* a unique index on the fill id of ``fill`` rows: a fill is journalled once, however often the
  exchange reports it (:meth:`Journal.record_fill` answers False for a known one).

Secrets: payloads are scrubbed of secret-named keys (:func:`coinrl.agents.redact.scrub_secrets`)
and of any registered secret value (:meth:`Journal.redact`) before they are written.

Example:
    >>> j = Journal(":memory:", run_id="demo")  # doctest: +SKIP
    >>> j.append("decision", ts_ms=0, payload={"target_exposure": 1.0})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import pandas as pd

from coinrl.agents.metrics import json_safe
from coinrl.agents.redact import scrub_secrets
from coinrl.envs.domain import Fill, Side
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.store import atomic_write_bytes

logger = logging.getLogger(__name__)

EventKind = Literal[
    "start", "decision", "risk", "order", "order_update", "fill", "balance", "reconciliation",
    "model", "halt", "error", "stop",
]
EVENT_KINDS: tuple[str, ...] = (
    "start", "decision", "risk", "order", "order_update", "fill", "balance", "reconciliation",
    "model", "halt", "error", "stop",
)

SCHEMA_VERSION = 1

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in EVENT_KINDS)})),
    ts_ms INTEGER NOT NULL,
    wall_ts_ms INTEGER NOT NULL,
    bar_ts_ms INTEGER,
    client_order_id TEXT,
    fill_id TEXT,
    payload TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_fill_once ON events (fill_id) WHERE kind = 'fill';
CREATE INDEX IF NOT EXISTS events_kind ON events (kind, seq);
CREATE INDEX IF NOT EXISTS events_order ON events (client_order_id) WHERE client_order_id IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: UPDATE is forbidden'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: DELETE is forbidden'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: UPDATE is forbidden'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
BEGIN SELECT RAISE(ABORT, 'the journal is append-only: DELETE is forbidden'); END;
"""

_COLUMNS = ("seq", "run_id", "kind", "ts_ms", "wall_ts_ms", "bar_ts_ms", "client_order_id",
            "fill_id", "payload")


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One journal row (``payload`` decoded from JSON)."""

    seq: int
    run_id: str
    kind: str
    ts_ms: int
    wall_ts_ms: int
    bar_ts_ms: int | None
    client_order_id: str | None
    fill_id: str | None
    payload: dict[str, Any]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def fill_payload(fill: Fill) -> dict[str, Any]:
    """A :class:`~coinrl.envs.domain.Fill` as a JSON-ready dict (inverse: :func:`fill_from_payload`)."""
    return {
        "fill_id": fill.fill_id, "order_id": fill.order_id, "symbol": fill.symbol,
        "side": fill.side.value, "qty_base": fill.qty_base, "price_quote": fill.price_quote,
        "fee_quote": fill.fee_quote, "ts_ms": fill.ts_ms, "slippage_quote": fill.slippage_quote,
        "liquidity": fill.liquidity,
    }


def fill_from_payload(p: Mapping[str, Any]) -> Fill:
    """The :class:`~coinrl.envs.domain.Fill` a ``fill`` row holds."""
    return Fill(
        fill_id=str(p["fill_id"]), order_id=str(p["order_id"]), symbol=str(p["symbol"]),
        side=Side(p["side"]), qty_base=float(p["qty_base"]), price_quote=float(p["price_quote"]),
        fee_quote=float(p["fee_quote"]), ts_ms=int(p["ts_ms"]),
        slippage_quote=float(p.get("slippage_quote") or 0.0),
        liquidity="maker" if p.get("liquidity") == "maker" else "taker",
    )


class Journal:
    """An append-only SQLite journal of one trading run (see the module docstring).

    Args:
        path: the database file (created with its folder if missing), or ``":memory:"``.
        run_id: the run's id. When the file already holds a run, the stored id is used (a
            restarted runner continues its run) and a different ``run_id`` is an error.

    Raises:
        ConfigError: ``run_id`` differs from the one the file was started with, or the file is
            not a coinrl journal.
    """

    def __init__(self, path: str | Path, *, run_id: str | None = None) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._secrets: set[str] = set()
        self.closed = False
        target = str(self.path) if self.path is not None else ":memory:"
        try:
            self._conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False,
                                         timeout=30.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ConfigError(f"{target} is not a usable coinrl journal (SQLite said: {e})") from e
        stored = self._meta("run_id")
        if stored is None:
            if run_id is None:
                raise ConfigError(
                    f"journal {target} is new: pass the run_id to start it with"
                )
            self._conn.execute("INSERT INTO meta (key, value) VALUES ('run_id', ?)", (run_id,))
            self._conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                               (str(SCHEMA_VERSION),))
            self.run_id = run_id
        else:
            if run_id is not None and run_id != stored:
                raise ConfigError(
                    f"journal {target} belongs to run {stored!r}, not {run_id!r}; pass the same "
                    "run id to continue that run, or another journal file for a new run"
                )
            self.run_id = stored
        logger.debug("journal open path=%s run_id=%s events=%d", target, self.run_id, self.count())

    @classmethod
    def open_existing(cls, path: str | Path) -> Journal:
        """Open a journal that must already exist (``coinrl status``)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"journal {p} does not exist; pass the --journal a run wrote")
        return cls(p)

    # -- internals --------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _check_open(self) -> None:
        if self.closed:
            raise DataError(f"journal {self.path or ':memory:'} is closed; open it again to use it")

    def redact(self, *values: str) -> None:
        """Register secret values (API key, secret): they are masked in every later payload."""
        self._secrets.update(v for v in values if v)

    def _encode(self, payload: Mapping[str, Any] | None) -> str:
        text = json.dumps(json_safe(scrub_secrets(dict(payload or {}))), sort_keys=True,
                          separators=(",", ":"), default=str)
        for value in self._secrets:
            text = text.replace(value, "***")
        return text

    # -- writing ----------------------------------------------------------------------------
    def append(
        self,
        kind: EventKind,
        *,
        ts_ms: int,
        payload: Mapping[str, Any] | None = None,
        bar_ts_ms: int | None = None,
        client_order_id: str | None = None,
        fill_id: str | None = None,
    ) -> int:
        """Append one event (committed and fsynced on return).

        Args:
            kind: one of :data:`EVENT_KINDS`.
            ts_ms: the event's time on the exchange's clock, UTC epoch ms.
            payload: JSON-ready details (secret-named keys are dropped).
            bar_ts_ms: open time of the decision bar it belongs to.
            client_order_id, fill_id: the order / fill it is about.

        Returns:
            The event's sequence number.

        Raises:
            DataError: ``kind`` is unknown, or a ``fill`` row repeats a journalled fill id.
        """
        if kind not in EVENT_KINDS:
            raise DataError(f"journal event kind {kind!r} is unknown; use one of {EVENT_KINDS}")
        self._check_open()
        text = self._encode(payload)
        with self._lock:
            try:
                cur = self._conn.execute(
                    "INSERT INTO events (run_id, kind, ts_ms, wall_ts_ms, bar_ts_ms, "
                    "client_order_id, fill_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.run_id, kind, int(ts_ms), _now_ms(),
                     None if bar_ts_ms is None else int(bar_ts_ms), client_order_id, fill_id,
                     text),
                )
            except sqlite3.IntegrityError as e:
                raise DataError(
                    f"journal refused a {kind} row (fill_id={fill_id!r}): {e}; a fill is "
                    "journalled once (use record_fill, which skips known fills)"
                ) from e
            seq = cur.lastrowid
        assert seq is not None  # noqa: S101 - sqlite always gives the rowid of an insert
        return int(seq)

    def record_fill(
        self, fill: Fill, *, source: str = "exchange", bar_ts_ms: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Journal ``fill`` once.

        Args:
            fill: the execution.
            source: where it was learnt (``exchange``, ``paper``, ``reconciliation``).
            bar_ts_ms: the decision bar of its order.
            extra: more payload.

        Returns:
            True when it was new, False when this fill id was already journalled.
        """
        self._check_open()
        payload = {**fill_payload(fill), "source": source, **dict(extra or {})}
        text = self._encode(payload)
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO events (run_id, kind, ts_ms, wall_ts_ms, bar_ts_ms, "
                "client_order_id, fill_id, payload) VALUES (?, 'fill', ?, ?, ?, ?, ?, ?)",
                (self.run_id, int(fill.ts_ms), _now_ms(), bar_ts_ms, fill.order_id,
                 fill.fill_id, text),
            )
            return cur.rowcount == 1

    def log_trades(self, trade_details: Iterable[Fill], *, source: str = "exchange") -> int:
        """Journal fills (the seed's ``log_trades``); returns how many were new."""
        return sum(self.record_fill(f, source=source) for f in trade_details)

    # -- reading ----------------------------------------------------------------------------
    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[JournalEvent]:
        self._check_open()
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [JournalEvent(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]),
                             None if r[5] is None else int(r[5]), r[6], r[7], json.loads(r[8]))
                for r in rows]

    def events(self, kind: str | None = None, *, since_seq: int = 0) -> list[JournalEvent]:
        """Events (of one kind, or all) after ``since_seq``, oldest first."""
        cols = ", ".join(_COLUMNS)
        if kind is None:
            return self._rows(f"SELECT {cols} FROM events WHERE seq > ? ORDER BY seq",  # noqa: S608
                              (since_seq,))
        return self._rows(
            f"SELECT {cols} FROM events WHERE kind = ? AND seq > ? ORDER BY seq",  # noqa: S608
            (kind, since_seq),
        )

    def last(self, kind: str) -> JournalEvent | None:
        """The latest event of ``kind``, or None."""
        cols = ", ".join(_COLUMNS)
        rows = self._rows(
            f"SELECT {cols} FROM events WHERE kind = ? ORDER BY seq DESC LIMIT 1",  # noqa: S608
            (kind,),
        )
        return rows[0] if rows else None

    def count(self, kind: str | None = None) -> int:
        """Number of events (of one kind)."""
        self._check_open()
        with self._lock:
            if kind is None:
                row = self._conn.execute("SELECT COUNT(*) FROM events").fetchone()
            else:
                row = self._conn.execute("SELECT COUNT(*) FROM events WHERE kind = ?",
                                         (kind,)).fetchone()
        return int(row[0])

    def fills(self) -> list[Fill]:
        """Every journalled fill, in the order it was journalled."""
        return [fill_from_payload(e.payload) for e in self.events("fill")]

    def fill_ids(self) -> set[str]:
        """Ids of the journalled fills."""
        with self._lock:
            rows = self._conn.execute("SELECT fill_id FROM events WHERE kind = 'fill'").fetchall()
        return {str(r[0]) for r in rows}

    def orders(self) -> dict[str, dict[str, Any]]:
        """Client order id -> what the journal knows of it: the ``order`` row's payload merged
        with its later ``order_update`` rows (latest last), plus ``bar_ts_ms``."""
        out: dict[str, dict[str, Any]] = {}
        for e in self._rows(
            f"SELECT {', '.join(_COLUMNS)} FROM events WHERE kind IN ('order', 'order_update') "  # noqa: S608
            "AND client_order_id IS NOT NULL ORDER BY seq"
        ):
            cid = str(e.client_order_id)
            merged = out.setdefault(cid, {"bar_ts_ms": e.bar_ts_ms})
            merged.update(e.payload)
        return out

    def to_frame(self) -> pd.DataFrame:
        """Every event as a DataFrame (``payload`` kept as its JSON text)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM events ORDER BY seq"  # noqa: S608
            ).fetchall()
        frame = pd.DataFrame(rows, columns=list(_COLUMNS))
        for col in ("seq", "ts_ms", "wall_ts_ms"):
            frame[col] = frame[col].astype("int64")
        frame["bar_ts_ms"] = frame["bar_ts_ms"].astype("Int64")
        return frame

    def export_parquet(self, path: str | Path) -> Path:
        """Write every event to a Parquet file (atomically); returns its path."""
        dest = Path(path)
        frame = self.to_frame()
        frame.attrs = {}
        atomic_write_bytes(dest, lambda tmp: frame.to_parquet(tmp, index=False))
        logger.info("journal exported path=%s rows=%d run_id=%s", dest, len(frame), self.run_id)
        return dest

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` answer (``"ok"`` for a sound file)."""
        with self._lock:
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- closing ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Move the WAL into the main file (every committed row is already durable)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Checkpoint and close (idempotent)."""
        with self._lock:
            if self.closed:
                return
            try:
                self.flush()
            except sqlite3.Error:  # a checkpoint is an optimisation; the rows are durable
                logger.debug("journal checkpoint failed", exc_info=True)
            self._conn.close()
            self.closed = True

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def log_trades(journal: Journal, trade_details: Iterable[Fill], *, source: str = "exchange") -> int:
    """Journal fills once each (the seed's name); returns how many were new."""
    return journal.log_trades(trade_details, source=source)


__all__ = [
    "EVENT_KINDS",
    "EventKind",
    "Journal",
    "JournalEvent",
    "fill_from_payload",
    "fill_payload",
    "log_trades",
]
