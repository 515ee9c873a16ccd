"""Grouped rolling indicators, vectorised over every series of a batch at once.

Bars arrive sorted by (series, time). They are laid out as a padded matrix, one row per series
(series of similar length share a matrix so padding stays small), and every indicator is a
handful of whole-matrix numpy operations along the time axis: no Python loop per series or per
bar. Windows not yet filled are NaN, never a partial value. Definitions: docs/indicators.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Matrix = np.ndarray


@dataclass(frozen=True)
class Bucket:
    """Series of similar length laid out as the rows of one padded matrix."""

    flat: np.ndarray  # flat index of each cell that holds a bar
    rows: np.ndarray
    cols: np.ndarray
    shape: tuple[int, int]
    # When every row is full and the series are adjacent, the matrix is a reshape of a slice.
    dense_start: int | None


@dataclass(frozen=True)
class Layout:
    """Where each bar of a (series, time)-sorted frame sits in the padded matrices."""

    buckets: list[Bucket]
    size: int

    @staticmethod
    def from_groups(group_start: np.ndarray, group_length: np.ndarray, size: int) -> Layout:
        """Bucket series by length (powers of two) so a matrix wastes at most half its cells."""
        buckets: list[Bucket] = []
        if size == 0:
            return Layout(buckets, size)
        bucket_of = np.ceil(np.log2(np.maximum(group_length, 1))).astype(np.int64)
        for bucket in np.unique(bucket_of):
            groups = np.flatnonzero(bucket_of == bucket)
            lengths = group_length[groups]
            width = int(lengths.max())
            starts = group_start[groups]
            dense = bool((lengths == width).all() and (np.diff(starts) == width).all())
            if dense:
                buckets.append(Bucket(_EMPTY, _EMPTY, _EMPTY, (groups.size, width), int(starts[0])))
                continue
            row = np.repeat(np.arange(groups.size), lengths)
            offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
            col = np.arange(int(lengths.sum())) - offsets
            flat = np.repeat(starts, lengths) + col
            buckets.append(Bucket(flat, row, col, (groups.size, width), None))
        return Layout(buckets, size)

    def to_matrices(self, values: np.ndarray) -> list[Matrix]:
        mats = []
        for bucket in self.buckets:
            if bucket.dense_start is not None:
                rows, width = bucket.shape
                block = values[bucket.dense_start : bucket.dense_start + rows * width]
                mats.append(block.astype(np.float64).reshape(rows, width))
                continue
            mat = np.full(bucket.shape, np.nan)
            mat[bucket.rows, bucket.cols] = values[bucket.flat]
            mats.append(mat)
        return mats

    def to_flat(self, mats: list[Matrix]) -> np.ndarray:
        if len(mats) == 1 and self.buckets[0].dense_start == 0 and mats[0].size == self.size:
            return mats[0].reshape(-1)  # the common case of equal-length series: no copy
        out = np.empty(self.size)
        for bucket, mat in zip(self.buckets, mats, strict=True):
            if bucket.dense_start is not None:
                out[bucket.dense_start : bucket.dense_start + mat.size] = mat.reshape(-1)
            else:
                out[bucket.flat] = mat[bucket.rows, bucket.cols]
        return out


_EMPTY = np.zeros(0, np.int64)


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


def rolling_mean_std(mat: Matrix, window: int, ddof: int) -> tuple[Matrix, Matrix]:
    """Mean and standard deviation of the last ``window`` values.

    Two passes (mean, then squared deviations from it) instead of sum-of-squares minus squared
    sum, which loses most digits when the spread is small against the level (prices).
    """
    mean = np.full_like(mat, np.nan)
    std = np.full_like(mat, np.nan)
    width = mat.shape[1]
    if window > width:
        return mean, std
    body = rolling_sum(mat, window)[:, window - 1 :] / window
    squares = np.zeros_like(body)
    deviation = np.empty_like(body)
    for lag in range(window):
        np.subtract(mat[:, window - 1 - lag : width - lag], body, out=deviation)
        np.multiply(deviation, deviation, out=deviation)
        squares += deviation
    mean[:, window - 1 :] = body
    std[:, window - 1 :] = np.sqrt(squares / (window - ddof))
    return mean, std


def rolling_std(mat: Matrix, window: int, ddof: int) -> Matrix:
    return rolling_mean_std(mat, window, ddof)[1]


def linear_recurrence(increment: Matrix, decay: float) -> Matrix:
    """y[t] = decay * y[t-1] + increment[t] along each row, y[-1] = 0.

    Solved as a prefix scan (Hillis-Steele): after the pass with stride d each cell holds the sum
    over its last 2d inputs, so log2(width) whole-matrix operations replace a loop over bars. All
    terms of a price EMA are positive, so the scan's rounding stays at a few ulps. For many short
    rows a plain loop over the columns is cheaper; both give the same numbers to rounding.
    """
    rows, width = increment.shape
    if rows >= 160:
        # Many short series: step along time, each step one vector op across all series.
        by_time = np.ascontiguousarray(increment.T)
        state = np.zeros(rows)
        for col in range(width):
            state *= decay
            state += by_time[col]
            by_time[col] = state
        return np.ascontiguousarray(by_time.T)
    out = increment.copy()
    stride = 1
    while stride < width:
        factor = decay**stride
        if factor < 1e-20:
            # Inputs that far back weigh less than a rounding error of the result.
            break
        out[:, stride:] += factor * out[:, :-stride]
        stride *= 2
    return out


def seeded_average(mat: Matrix, period: int, alpha: float, first: int) -> Matrix:
    """Exponential average seeded with the simple average of its first ``period`` values.

    ``first`` is the column of the first defined input (the same in every row: rows start at
    their series' first bar). Output is NaN before ``first + period - 1``; then
    y = seed, and y[t] = (1 - alpha) * y[t-1] + alpha * x[t].
    EMA: alpha = 2 / (period + 1); Wilder's smoothing: alpha = 1 / period.
    """
    out = np.full_like(mat, np.nan)
    seed_col = first + period - 1
    width = mat.shape[1]
    if seed_col >= width:
        return out
    increment = np.zeros((mat.shape[0], width - seed_col))
    increment[:, 0] = mat[:, first : seed_col + 1].sum(axis=1) / period
    increment[:, 1:] = alpha * mat[:, seed_col + 1 :]
    out[:, seed_col:] = linear_recurrence(increment, 1.0 - alpha)
    return out


def ema(mat: Matrix, period: int, first: int = 0) -> Matrix:
    return seeded_average(mat, period, 2.0 / (period + 1), first)


def wilder(mat: Matrix, period: int, first: int) -> Matrix:
    return seeded_average(mat, period, 1.0 / period, first)


def macd_columns(close: Matrix) -> dict[str, Matrix]:
    ema_12 = ema(close, 12)
    ema_26 = ema(close, 26)
    line = ema_12 - ema_26
    signal = ema(line, 9, first=25)
    return {
        "ema_12": ema_12,
        "ema_26": ema_26,
        "macd": line,
        "macd_signal": signal,
        "macd_hist": line - signal,
    }


def rsi(close: Matrix, period: int = 14) -> Matrix:
    delta = close - shift(close, 1)
    average_gain = wilder(np.maximum(delta, 0.0), period, first=1)
    average_loss = wilder(np.maximum(-delta, 0.0), period, first=1)
    total = average_gain + average_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 100.0 * average_gain / total
    # No movement at all over the averaging: neither overbought nor oversold.
    return np.where(total == 0.0, 50.0, value)


def atr(high: Matrix, low: Matrix, close: Matrix, period: int = 14) -> Matrix:
    previous = shift(close, 1)
    true_range = np.maximum(high - low, np.maximum(np.abs(high - previous), np.abs(low - previous)))
    return wilder(true_range, period, first=1)


def bollinger_columns(close: Matrix, window: int = 20, width: float = 2.0) -> dict[str, Matrix]:
    middle, std = rolling_mean_std(close, window, ddof=0)
    spread = width * std
    return {"bb_middle": middle, "bb_upper": middle + spread, "bb_lower": middle - spread}


def segmented_cumsum(values: np.ndarray, layout: Layout) -> np.ndarray:
    """Cumulative sum restarting at every segment of ``layout`` (e.g. a trading day)."""
    return layout.to_flat([np.cumsum(mat, axis=1) for mat in layout.to_matrices(values)])


def trailing_extreme(
    values: np.ndarray, left: np.ndarray, eligible: np.ndarray, reducer: np.ufunc
) -> np.ndarray:
    """reducer(values[left[i] .. i]) for eligible i, NaN elsewhere.

    Sparse-table range query: level k holds the extreme of 2**k consecutive values; a window of
    length L is covered by two (overlapping) blocks of the largest 2**k <= L. Levels are built
    one at a time and answered as they go, so memory stays at two arrays.
    """
    size = values.size
    out = np.full(size, np.nan)
    queries = np.flatnonzero(eligible)
    if queries.size == 0:
        return out
    lefts = left[queries]
    lengths = queries - lefts + 1
    levels = np.floor(np.log2(lengths)).astype(np.int64)
    table = values.astype(np.float64, copy=True)
    scratch = np.empty_like(table)
    valid = size  # table[i] is defined for i < valid
    for level in range(int(levels.max()) + 1):
        if level:
            half = 1 << (level - 1)
            valid -= half
            reducer(table[:valid], table[half : valid + half], out=scratch[:valid])
            table, scratch = scratch, table
        at_level = levels == level
        if at_level.any():
            block = 1 << level
            q = queries[at_level]
            out[q] = reducer(table[lefts[at_level]], table[q - block + 1])
    return out
