"""Grouped rolling indicators, vectorised over every series of a batch at once.

Bars arrive sorted by (series, time). They are laid out as padded matrices, one row per series
(series of similar length share a matrix so padding stays small), cut into cache-sized blocks,
and every indicator is a handful of whole-matrix numpy operations along the time axis: no Python
loop per series or per bar. Windows not yet filled are NaN, never a partial value. Definitions
and numerics: docs/indicators.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Matrix = np.ndarray


# Cells per block: a block's working matrices (a dozen of them) stay in the 1 MiB L2 cache, where
# numpy's elementwise passes run three to four times faster than streaming 8 MB arrays from RAM.
BLOCK_CELLS = 1 << 15


@dataclass(frozen=True)
class Block:
    """Whole series of similar length laid out as the rows of one padded matrix.

    ``cell`` (flat position in the matrix) and ``flat`` (position in the flat bar arrays) map
    each bar; a dense block (every row full, series adjacent) is a reshape of a slice instead.
    """

    shape: tuple[int, int]
    dense_start: int | None
    flat: np.ndarray
    cell: np.ndarray

    def gather(self, values: np.ndarray) -> Matrix:
        rows, width = self.shape
        if self.dense_start is not None:
            block = values[self.dense_start : self.dense_start + rows * width]
            return block.astype(np.float64, copy=False).reshape(rows, width)
        mat = np.full(rows * width, np.nan)
        mat[self.cell] = values[self.flat]
        return mat.reshape(rows, width)

    def scatter(self, mat: Matrix, out: np.ndarray) -> None:
        if self.dense_start is not None:
            out[self.dense_start : self.dense_start + mat.size] = mat.reshape(-1)
        else:
            out[self.flat] = mat.reshape(-1)[self.cell]


@dataclass(frozen=True)
class Layout:
    """Where each bar of a (series, time)-sorted frame sits in the padded block matrices."""

    blocks: list[Block]
    size: int

    @staticmethod
    def from_groups(
        group_start: np.ndarray, group_length: np.ndarray, size: int, cells: int = BLOCK_CELLS
    ) -> Layout:
        """Bucket series by length (powers of two) so a matrix wastes at most half its cells,
        then cut each bucket into blocks of about ``cells`` cells (at least one series each)."""
        blocks: list[Block] = []
        if size == 0:
            return Layout(blocks, size)
        bucket_of = np.ceil(np.log2(np.maximum(group_length, 1))).astype(np.int64)
        for bucket in np.unique(bucket_of):
            groups = np.flatnonzero(bucket_of == bucket)
            rows_per_block = max(1, cells // int(group_length[groups].max()))
            for first in range(0, groups.size, rows_per_block):
                chosen = groups[first : first + rows_per_block]
                blocks.append(_block(group_start[chosen], group_length[chosen]))
        return Layout(blocks, size)

    def to_matrices(self, values: np.ndarray) -> list[Matrix]:
        return [block.gather(values) for block in self.blocks]

    def to_flat(self, mats: list[Matrix]) -> np.ndarray:
        out = np.empty(self.size)
        for block, mat in zip(self.blocks, mats, strict=True):
            block.scatter(mat, out)
        return out


def _block(starts: np.ndarray, lengths: np.ndarray) -> Block:
    width = int(lengths.max())
    if (lengths == width).all() and (np.diff(starts) == width).all():
        return Block((starts.size, width), int(starts[0]), _EMPTY, _EMPTY)
    row = np.repeat(np.arange(starts.size), lengths)
    col = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat = np.repeat(starts, lengths) + col
    return Block((starts.size, width), None, flat, row * width + col)


_EMPTY = np.zeros(0, np.int64)


def shift(mat: Matrix, lag: int) -> Matrix:
    """Value ``lag`` bars earlier in the same series (NaN before the series starts)."""
    out = np.full_like(mat, np.nan)
    if lag < mat.shape[1]:
        out[:, lag:] = mat[:, :-lag] if lag else mat
    return out


def rolling_sum(mat: Matrix, window: int) -> Matrix:
    """Sum of the last ``window`` values; NaN until the window is full (or if one is NaN)."""
    out = np.full_like(mat, np.nan)
    if window <= mat.shape[1]:
        out[:, window - 1 :] = window_sums(mat, window)
    return out


def rolling_means(mat: Matrix, windows: tuple[int, ...]) -> list[Matrix]:
    """Means of the last N values for each long window N; NaN until the window is full.

    One per-row cumulative sum (never across series) serves every window; it keeps the error
    relative to the series' own magnitude (a 200-bar window of a 20,000-bar row: ~1e-14).
    """
    width = mat.shape[1]
    filled = np.nan_to_num(mat, nan=0.0)
    cums = np.cumsum(filled, axis=1)
    nan_count = np.cumsum(np.isnan(mat), axis=1) if np.isnan(mat).any() else None
    means = []
    for window in windows:
        out = np.full_like(mat, np.nan)
        if window <= width:
            body = out[:, window - 1 :]
            body[:] = cums[:, window - 1 :]
            body[:, 1:] -= cums[:, : width - window]
            body /= window
            if nan_count is not None:
                # A NaN inside the window (e.g. the first log return) leaves the mean undefined.
                missing = nan_count[:, window - 1 :].copy()
                missing[:, 1:] -= nan_count[:, : width - window]
                body[missing > 0] = np.nan
        means.append(out)
    return means


def window_sums(mat: Matrix, window: int) -> Matrix:
    """``result[:, m] = sum(mat[:, m : m + window])`` for every full window along the rows.

    Built by doubling: sums of 2, 4, 8, 16 neighbours, each from two of the previous size, and
    the window assembled from the powers of two in its binary form (20 = 16 + 4): five additions
    for a 20-bar window instead of nineteen, and every one adds actual values (no cancellation).
    """
    count = mat.shape[1] - window + 1
    total: Matrix | None = None
    offset = 0  # where the next piece starts, relative to the window's first value
    span_sums, span = mat, 1  # span_sums[:, m] = sum(mat[:, m : m + span])
    while True:
        if window & span:
            piece = span_sums[:, offset : offset + count]
            total = piece.copy() if total is None else np.add(total, piece, out=total)
            offset += span
        if 2 * span > window:
            assert total is not None
            return total
        span_sums = span_sums[:, :-span] + span_sums[:, span:]
        span *= 2


def rolling_mean(mat: Matrix, window: int) -> Matrix:
    if window <= 32:
        return rolling_sum(mat, window) / window
    return rolling_means(mat, (window,))[0]


def change_columns(close: Matrix, previous: Matrix) -> dict[str, Matrix]:
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
    sum, which loses most digits when the spread is small against the level (prices) and cannot
    give an exact 0 for a flat window. Run per cache-sized block, the 20 lags are cheap.
    """
    mean = np.full_like(mat, np.nan)
    std = np.full_like(mat, np.nan)
    width = mat.shape[1]
    if window > width:
        return mean, std
    body = window_sums(mat, window)
    body /= window
    squares = np.zeros_like(body)
    deviation = np.empty_like(body)
    for lag in range(window):
        np.subtract(mat[:, window - 1 - lag : width - lag], body, out=deviation)
        np.multiply(deviation, deviation, out=deviation)
        squares += deviation
    squares /= window - ddof
    mean[:, window - 1 :] = body
    np.sqrt(squares, out=std[:, window - 1 :])
    return mean, std


def rolling_std(mat: Matrix, window: int, ddof: int) -> Matrix:
    return rolling_mean_std(mat, window, ddof)[1]


def linear_recurrence(increment: Matrix, decay: np.ndarray) -> Matrix:
    """y[t] = decay * y[t-1] + increment[t] along each row, y[-1] = 0; ``decay`` is per row.

    Several averages of a block share one call (stacked as rows, each with its own decay), so
    the per-step cost of the time loop is paid once. Many rows: step along time, each step one
    vector operation across all rows. Few long rows: a prefix scan (Hillis-Steele): after the
    pass with stride d each cell holds the sum over its last 2d inputs, so log2(width)
    whole-matrix operations replace the loop over bars; inputs further back than where
    decay**k < 1e-20 weigh less than a rounding error and are dropped. Both give the reference
    recurrence to a few ulps (its terms are never much larger than the result).
    """
    rows, width = increment.shape
    decay_column = np.asarray(decay, dtype=np.float64).reshape(rows, 1)
    if rows >= 64:
        by_time = np.ascontiguousarray(increment.T)
        row_decay = decay_column.reshape(-1)
        state = np.zeros(rows)
        for col in range(width):
            state *= row_decay
            state += by_time[col]
            by_time[col] = state
        return np.ascontiguousarray(by_time.T)
    out = increment.copy()
    stride = 1
    largest_decay = float(decay_column.max()) if rows else 0.0
    while stride < width and largest_decay**stride >= 1e-20:
        out[:, stride:] += decay_column**stride * out[:, :-stride]
        stride *= 2
    return out


@dataclass(frozen=True)
class SeededAverage:
    """An exponential average seeded with the simple average of its first ``period`` inputs.

    ``first`` is the column of the first defined input (the same in every row: rows start at
    their series' first bar). Output is NaN before ``first + period - 1``; then y = seed, and
    y[t] = (1 - alpha) * y[t-1] + alpha * x[t].
    EMA: alpha = 2 / (period + 1); Wilder's smoothing: alpha = 1 / period.
    """

    values: Matrix
    period: int
    alpha: float
    first: int = 0

    @staticmethod
    def ema(values: Matrix, period: int, first: int = 0) -> SeededAverage:
        return SeededAverage(values, period, 2.0 / (period + 1), first)

    @staticmethod
    def wilder(values: Matrix, period: int, first: int) -> SeededAverage:
        return SeededAverage(values, period, 1.0 / period, first)

    @property
    def seed_col(self) -> int:
        return self.first + self.period - 1

    def increment(self) -> Matrix:
        """The recurrence's input: 0 before the seed, the seed, then alpha * x."""
        rows, width = self.values.shape
        increment = np.zeros((rows, width))
        seed_col = self.seed_col
        if seed_col < width:
            increment[:, seed_col] = self.values[:, self.first : seed_col + 1].sum(axis=1)
            increment[:, seed_col] /= self.period
            np.multiply(
                self.alpha, self.values[:, seed_col + 1 :], out=increment[:, seed_col + 1 :]
            )
        return increment


def seeded_averages(averages: list[SeededAverage]) -> list[Matrix]:
    """Every average of the list, solved as one stacked recurrence (same block shape)."""
    rows, width = averages[0].values.shape
    stacked = np.concatenate([average.increment() for average in averages])
    decay = np.repeat([1.0 - average.alpha for average in averages], rows)
    solved = linear_recurrence(stacked, decay)
    results = []
    for k, average in enumerate(averages):
        result = solved[k * rows : (k + 1) * rows]
        result[:, : min(average.seed_col, width)] = np.nan  # no partial windows
        results.append(result)
    return results


def ema(mat: Matrix, period: int, first: int = 0) -> Matrix:
    return seeded_averages([SeededAverage.ema(mat, period, first)])[0]


def wilder(mat: Matrix, period: int, first: int) -> Matrix:
    return seeded_averages([SeededAverage.wilder(mat, period, first)])[0]


def true_range(high: Matrix, low: Matrix, previous: Matrix) -> Matrix:
    return np.maximum(high - low, np.maximum(np.abs(high - previous), np.abs(low - previous)))


def relative_strength(average_gain: Matrix, average_loss: Matrix) -> Matrix:
    total = average_gain + average_loss
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 100.0 * average_gain / total
    # No movement at all over the averaging: neither overbought nor oversold.
    return np.where(total == 0.0, 50.0, value)


def bollinger_columns(close: Matrix, window: int = 20, width: float = 2.0) -> dict[str, Matrix]:
    middle, std = rolling_mean_std(close, window, ddof=0)
    spread = width * std
    return {"bb_middle": middle, "bb_upper": middle + spread, "bb_lower": middle - spread}


def block_indicators(close: Matrix, high: Matrix, low: Matrix) -> dict[str, Matrix]:
    """Every matrix-shaped OLAP column of one block (volatility not yet annualised)."""
    previous = shift(close, 1)
    changes = change_columns(close, previous)
    bollinger = bollinger_columns(close, 20, 2.0)
    delta = close - previous
    # The five exponential averages on prices are independent: one stacked recurrence.
    ema_12, ema_26, average_gain, average_loss, atr_14 = seeded_averages(
        [
            SeededAverage.ema(close, 12),
            SeededAverage.ema(close, 26),
            SeededAverage.wilder(np.maximum(delta, 0.0), 14, first=1),
            SeededAverage.wilder(np.maximum(-delta, 0.0), 14, first=1),
            SeededAverage.wilder(true_range(high, low, previous), 14, first=1),
        ]
    )
    macd = ema_12 - ema_26
    signal = ema(macd, 9, first=25)
    sma_50, sma_200 = rolling_means(close, (50, 200))
    return {
        **changes,
        "sma_20": bollinger["bb_middle"],
        "sma_50": sma_50,
        "sma_200": sma_200,
        "ema_12": ema_12,
        "ema_26": ema_26,
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": macd - signal,
        "rsi_14": relative_strength(average_gain, average_loss),
        **bollinger,
        "atr_14": atr_14,
        "volatility_20": rolling_std(changes["log_return"], 20, ddof=1),
    }


def segmented_cumsum(values: np.ndarray, layout: Layout) -> np.ndarray:
    """Cumulative sum restarting at every segment of ``layout`` (e.g. a trading day)."""
    return layout.to_flat([np.cumsum(mat, axis=1) for mat in layout.to_matrices(values)])


@dataclass(frozen=True)
class TrailingWindows:
    """Windows ``[left[i], i]`` over the flat bars, prepared for range-extreme queries.

    Block decomposition: with blocks of B values, B at most half the shortest eligible window, such
    a window always starts and ends in different blocks, and its extreme is that of (the suffix
    of left's block from left) + (the whole blocks between) + (the prefix of i's block up to i).
    Suffixes and prefixes are two accumulate passes over a (blocks, B) reshape; the whole blocks
    between are a sparse-table query over the small array of block extremes. A handful of
    passes over the data whatever the window length. The geometry (block of each end, table
    cells of the query) is computed once and shared by the max and the min.
    """

    left: np.ndarray
    eligible: np.ndarray
    shift_bits: int  # B = 2**shift_bits
    blocks: int
    levels: int  # rows of the sparse table over block extremes
    run_start: np.ndarray  # flat table cell of the first power-of-two run of inner blocks
    run_end: np.ndarray  # flat table cell of the second (overlapping) run

    @staticmethod
    def build(left: np.ndarray, eligible: np.ndarray) -> TrailingWindows:
        size = left.size
        positions = np.arange(size)
        lookback = positions - left
        shortest = int(lookback.min(initial=size, where=eligible)) + 1
        shift_bits = int(np.log2(max(shortest // 2, 1)))
        blocks = -(-size // (1 << shift_bits)) if size else 0
        # Whole blocks strictly between the two ends: [left's block + 1, i's block - 1]. None
        # when they are neighbours (or the same block, for a short ineligible window): those
        # query an identity sentinel (block index ``blocks``) instead.
        first_inner = left >> shift_bits
        first_inner += 1
        last_inner = positions >> shift_bits
        last_inner -= 1
        count = last_inner - first_inner + 1
        empty = count <= 0
        first_inner[empty] = blocks
        last_inner[empty] = blocks
        count[empty] = 1
        # floor(log2(count)) from a small table instead of a float log per bar.
        level_of_count = np.log2(np.arange(1, blocks + 2)).astype(np.int64)
        level = level_of_count[count - 1]
        row = level * (blocks + 1)
        run_start = row + first_inner
        run_end = row + last_inner + 1
        run_end -= 1 << level
        levels = int(level.max()) + 1 if size else 1
        return TrailingWindows(left, eligible, shift_bits, blocks, levels, run_start, run_end)

    def extreme(self, values: np.ndarray, reducer: np.ufunc) -> np.ndarray:
        """reducer(values[left[i] .. i]) for eligible i, NaN elsewhere."""
        size = values.size
        if not self.eligible.any():
            return np.full(size, np.nan)
        block = 1 << self.shift_bits
        identity = -np.inf if reducer is np.maximum else np.inf
        padded = np.full(self.blocks * block, identity)
        padded[:size] = values
        grid = padded.reshape(self.blocks, block)
        prefix = reducer.accumulate(grid, axis=1)
        suffix = reducer.accumulate(grid[:, ::-1], axis=1)[:, ::-1].reshape(-1)
        result = reducer(suffix[self.left], prefix.reshape(-1)[:size])
        # Sparse table: row k holds the extreme of the 2**k block extremes from each block.
        table = np.full((self.levels, self.blocks + 1), identity)
        table[0, : self.blocks] = prefix[:, -1]
        for level in range(1, self.levels):
            half = 1 << (level - 1)
            reducer(table[level - 1, :-half], table[level - 1, half:], out=table[level, :-half])
        cells = table.reshape(-1)
        reducer(result, cells[self.run_start], out=result)
        reducer(result, cells[self.run_end], out=result)
        result[~self.eligible] = np.nan
        return result
