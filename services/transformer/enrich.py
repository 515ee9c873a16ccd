"""Validated bars of one series -> the denormalised OLAP rows (attributes, times, indicators)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from marketpipe.contract import BATCH_ARROW_TYPES, OBSERVED_COLUMNS, OLAP_COLUMNS
from marketpipe.indicators import StoredHistory, indicator_columns
from marketpipe.market import Venue, bar_end, bars_per_year, venue
from services.transformer.flatten import FlatSeries
from services.transformer.timeconv import NAIVE_DTYPE

# numpy dtype of each SQL type; timestamptz columns are then marked UTC. See transform.py.
NUMPY_DTYPES: dict[str, Any] = {
    "text": object,
    "jsonb": object,  # JSON text
    "double precision": np.float64,
    "timestamptz": NAIVE_DTYPE,
    "timestamp": NAIVE_DTYPE,
    "date": NAIVE_DTYPE,  # midnight; the loader casts to date
    "boolean": bool,
    "integer": np.int64,
}


Columns = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ContractColumns:
    """One contract table's values before they become a frame or an Arrow table.

    ``values``: an array or a constant (filling the column) per column; times are UTC, either
    naive datetime64 or a timezone-aware Timestamp. The job sends :meth:`table` to the loader
    without building a pandas frame: on a tick's 27 bars, pandas' per-column cost (building the
    frames, then ``Table.from_pandas``) was ~7 ms of a 20 ms job (bench/bench_transform.py).
    """

    columns: Columns
    values: dict[str, Any]
    size: int

    def frame(self) -> pd.DataFrame:
        """Exactly ``columns``, in order, with their contract dtypes (see transform.py)."""
        return pd.DataFrame(
            {name: _frame_column(self._filled(name, sql), sql) for name, sql in self.columns},
            copy=False,
        )

    def table(self) -> pa.Table:
        """The same columns as Arrow, NaN and NaT as NULL (as ``Table.from_pandas`` gives)."""
        schema = pa.schema([(name, BATCH_ARROW_TYPES[sql]) for name, sql in self.columns])
        arrays = [
            self._constant(name, field.type)
            if _is_text_constant(self.values[name])
            else pa.array(self._filled(name, sql), type=field.type, from_pandas=True)
            for (name, sql), field in zip(self.columns, schema, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=schema)

    def _constant(self, name: str, arrow_type: pa.DataType) -> pa.Array:
        # Repeated in C: converting a column of 5,000 Python strings costs ~0.3 ms each.
        value = self.values[name]
        return (
            pa.nulls(self.size, arrow_type)
            if value is None
            else pa.repeat(pa.scalar(value, arrow_type), self.size)
        )

    def _filled(self, name: str, sql: str) -> np.ndarray:
        value = self.values[name]
        if isinstance(value, pd.Timestamp):
            value = value.tz_convert("UTC").tz_localize(None).as_unit("us").to_datetime64()
        column = np.empty(self.size, dtype=NUMPY_DTYPES[sql])
        column[:] = value
        return column


def _is_text_constant(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _frame_column(column: np.ndarray, sql: str) -> Any:
    if sql == "timestamptz":
        return pd.DatetimeIndex(column).tz_localize("UTC").array
    if sql in ("text", "jsonb"):
        # An object Series: pandas 3 would infer "str" from an array of text (None -> NaN).
        return pd.Series(column, dtype=object, copy=False)
    return column


def empty_columns(columns: Columns) -> ContractColumns:
    return ContractColumns(columns, {name: [] for name, _ in columns}, 0)


def enrich(
    bars: pd.DataFrame,
    flat: FlatSeries,
    *,
    transformed_at: pd.Timestamp,
    history: StoredHistory | None = None,
) -> ContractColumns:
    """Every OLAP column for ``bars`` (validate.ValidatedSeries.bars, in time order).

    ``history``: the stored series they continue (None: they are the whole series).
    """
    size = len(bars)
    local = bars["local"].to_numpy().astype(NAIVE_DTYPE)
    # Stock days are the exchange's session days (local date); crypto and forex: UTC days.
    trading_date = local.astype("datetime64[D]").astype(NAIVE_DTYPE)
    values: dict[str, Any] = dict(flat.attributes)
    values["bar_time"] = bars["bar_time"].to_numpy()
    values["bar_time_local"] = local
    values["trading_date"] = trading_date
    for column in ("open", "high", "low", "close", "volume"):
        values[column] = bars[column].to_numpy()
    place = venue_of(flat)
    annualise = bars_per_year(str(flat.attributes["interval"]), place)
    values.update(indicator_columns(bars, trading_date, annualise, history=history))
    values["is_complete"] = completeness(local, flat, place)
    values["transformed_at"] = transformed_at
    return ContractColumns(OLAP_COLUMNS, values, size)


def observed(bars: pd.DataFrame, flat: FlatSeries) -> ContractColumns:
    """OBSERVED_COLUMNS of validated bars (warm-up too): raw values, no indicators, for the
    loader's restatement check (services/loader/restatement.py)."""
    local = bars["local"].to_numpy().astype(NAIVE_DTYPE)
    values: dict[str, Any] = {
        "symbol": flat.attributes["symbol"],
        "interval": flat.attributes["interval"],
        "bar_time": bars["bar_time"].to_numpy(),
        **{c: bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        "is_complete": completeness(local, flat, venue_of(flat)),
    }
    return ContractColumns(OBSERVED_COLUMNS, values, len(bars))


def venue_of(flat: FlatSeries) -> Venue:
    return venue(flat.asset_class, flat.exchange_timezone, flat.attributes.get("mic_code"))


def completeness(local: np.ndarray, flat: FlatSeries, place: Venue) -> np.ndarray:
    """False for the newest bar when it had not ended by the time the API answered."""
    complete = np.ones(len(local), bool)
    if len(local) == 0:
        return complete
    end = bar_end(pd.Timestamp(local[-1]), str(flat.attributes["interval"]), place)
    complete[-1] = end <= flat.fetched_at
    return complete
