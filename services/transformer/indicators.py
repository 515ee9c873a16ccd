"""Grouped rolling indicators, vectorised over every series of a batch at once.

Bars arrive sorted by (series, time). They are laid out as a padded matrix, one row per series
(series of similar length share a matrix so padding stays small), and every indicator is a
handful of whole-matrix numpy operations along the time axis: no Python loop per series or per
bar. Windows not yet filled are NaN, never a partial value. Definitions: docs/indicators.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Matrix = np.ndarray


@dataclass(frozen=True)
class Layout:
    """Where each bar sits in the padded matrices: bucket, row, column."""

    buckets: list[tuple[np.ndarray, int]]  # (flat indices of the bars, columns) per bucket
    rows: list[np.ndarray]
    cols: list[np.ndarray]
    size: int

    @staticmethod
    def from_groups(group_start: np.ndarray, group_length: np.ndarray, size: int) -> Layout:
        """Bucket series by length (powers of two) so a matrix wastes at most half its cells."""
        buckets: list[tuple[np.ndarray, int]] = []
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        if size == 0:
            return Layout(buckets, rows, cols, size)
        bucket_of = np.ceil(np.log2(np.maximum(group_length, 1))).astype(np.int64)
        for bucket in np.unique(bucket_of):
            groups = np.flatnonzero(bucket_of == bucket)
            lengths = group_length[groups]
            width = int(lengths.max())
            row = np.repeat(np.arange(groups.size), lengths)
            starts = np.repeat(group_start[groups], lengths)
            offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
            col = np.arange(int(lengths.sum())) - offsets
            flat = starts + col
            buckets.append((flat, width))
            rows.append(row)
            cols.append(col)
        return Layout(buckets, rows, cols, size)

    def to_matrices(self, values: np.ndarray) -> list[Matrix]:
        mats = []
        for (flat, width), row, col in zip(self.buckets, self.rows, self.cols, strict=True):
            mat = np.full((int(row.max()) + 1, width), np.nan)
            mat[row, col] = values[flat]
            mats.append(mat)
        return mats

    def to_flat(self, mats: list[Matrix]) -> np.ndarray:
        out = np.full(self.size, np.nan)
        for (flat, _), row, col, mat in zip(self.buckets, self.rows, self.cols, mats, strict=True):
            out[flat] = mat[row, col]
        return out

    def apply(self, func: Callable[..., Matrix], *values: np.ndarray) -> np.ndarray:
        per_input = [self.to_matrices(v) for v in values]
        results = [func(*mats) for mats in zip(*per_input, strict=True)]
        return self.to_flat(results)


def shift(mat: Matrix, lag: int) -> Matrix:
    """Value ``lag`` bars earlier in the same series (NaN before the series starts)."""
    out = np.full_like(mat, np.nan)
    if lag < mat.shape[1]:
        out[:, lag:] = mat[:, :-lag] if lag else mat
    return out


def rolling_sum(mat: Matrix, window: int) -> Matrix:
    """Sum of the last ``window`` values; NaN until the window is full.

    Cumulative sums per row (never across series) keep the error relative to the series' own
    magnitude; for the short windows a direct lag sum avoids the cumsum's cancellation.
    """
    out = np.full_like(mat, np.nan)
    if window > mat.shape[1]:
        return out
    if window <= 32:
        total = mat[:, window - 1 :].copy()
        for lag in range(1, window):
            total += mat[:, window - 1 - lag : mat.shape[1] - lag]
        out[:, window - 1 :] = total
        return out
    cums = np.cumsum(np.nan_to_num(mat, nan=0.0), axis=1)
    out[:, window - 1 :] = cums[:, window - 1 :]
    out[:, window:] -= cums[:, :-window]
    # A NaN inside the window (e.g. the first log return) must leave the sum undefined.
    nan_count = np.cumsum(np.isnan(mat), axis=1)
    missing = nan_count[:, window - 1 :].copy()
    missing[:, 1:] -= nan_count[:, : mat.shape[1] - window]
    out[:, window - 1 :][missing > 0] = np.nan
    return out


def rolling_mean(mat: Matrix, window: int) -> Matrix:
    return rolling_sum(mat, window) / window


def change_columns(close: Matrix) -> dict[str, Matrix]:
    previous = shift(close, 1)
    change = close - previous
    return {
        "previous_close": previous,
        "change": change,
        "pct_change": change / previous * 100.0,
        "log_return": np.log(close / previous),
    }
