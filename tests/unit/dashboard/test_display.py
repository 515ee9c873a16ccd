"""display.py: exchange time for stocks, UTC otherwise, prices at their quoted precision."""

from __future__ import annotations

import pandas as pd

from services.dashboard import display

NEW_YORK = "America/New_York"


def test_stocks_in_exchange_time_crypto_in_utc_or_all_in_utc() -> None:
    assert display.display_zone("stock", NEW_YORK, utc=False) == NEW_YORK
    assert display.display_zone("crypto", None, utc=False) == "UTC"
    assert display.display_zone("stock", NEW_YORK, utc=True) == "UTC"
    assert display.common_zone([NEW_YORK, NEW_YORK]) == NEW_YORK
    assert display.common_zone([NEW_YORK, "UTC"]) == "UTC"


def test_the_1530_bar_reads_1530_with_its_zone_named() -> None:
    bar = pd.Timestamp("2026-09-09 19:30", tz="UTC")  # the 15:30 EDT bar
    assert display.format_time(bar, NEW_YORK) == "2026-09-09 15:30 EDT"
    assert display.format_time(pd.Timestamp("2026-12-09 20:30", tz="UTC"), NEW_YORK).endswith(
        "15:30 EST"
    )
    assert display.format_time(bar, "UTC") == "2026-09-09 19:30 UTC"


def test_csv_frames_carry_utc_and_local_times() -> None:
    frame = pd.DataFrame({"bar_time": [pd.Timestamp("2026-09-09 19:30", tz="UTC")], "close": [1.0]})
    out = display.with_local_times(frame, NEW_YORK)
    assert list(out.columns) == ["bar_time", "bar_time_local", "time_zone", "close"]
    assert out["bar_time"].iloc[0] == frame["bar_time"].iloc[0]
    assert out["bar_time_local"].iloc[0] == pd.Timestamp("2026-09-09 15:30")
    assert out["time_zone"].iloc[0] == NEW_YORK


def test_prices_are_rounded_per_row_to_their_decimals() -> None:
    frame = pd.DataFrame(
        {
            "change": [456.5799999999872, 0.000123456789],
            "price_decimals": [2, 8],
            "pct": [1.23456, 2],
        }
    )
    shown = display.rounded(frame, prices=("change",))
    assert shown["change"].tolist() == [456.58, 0.00012346]
    assert shown["pct"].tolist() == frame["pct"].tolist()  # percents keep their value
    assert frame["change"].iloc[0] == 456.5799999999872  # the source keeps full precision
    assert display.price(65432.123456, 2) == "65,432.12"
    assert display.signed_percent(1.23456) == "+1.23%"


def test_tables_show_prices_at_each_rows_precision_with_thousands_separators() -> None:
    frame = pd.DataFrame(
        {
            "symbol": ["BTC/USD", "EUR/USD", "AAPL"],
            "last_price": [85226.2312, 1.162341, 290.7],
            "day_pct_change": [1.6012, -0.25, None],
            "avg_volume_20d": [None, None, 46830854.4],
            "price_decimals": [2, 5, 2],
        }
    )
    text = display.styled(
        frame, prices=("last_price",), percents=("day_pct_change",), counts=("avg_volume_20d",)
    ).to_string()
    for shown in ("85,226.23", "1.16234", "290.70", "+1.60", "-0.25", "46,830,854"):
        assert shown in text, text
    assert frame["last_price"].iloc[0] == 85226.2312  # the values stay numbers, unrounded


def test_currency_is_the_stored_one_or_the_pairs_quote() -> None:
    assert display.currency_of("USD", "AAPL") == "USD"
    assert display.currency_of(None, "BTC/USD") == "USD"
    assert display.currency_of("", "USD/JPY") == "JPY"
