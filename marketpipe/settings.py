"""Typed settings for every marketpipe service, read from the environment.

Each field maps to the upper-case environment variable of the same name (``symbols`` ->
``SYMBOLS``). :func:`load_settings` is the entry point for services: a malformed value stops the
process at start with a message naming the variable.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal, Self, TypeVar, get_args

from cronsim import CronSim, CronSimError
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

Interval = Literal[
    "1min", "5min", "15min", "30min", "45min", "1h", "2h", "4h", "8h", "1day", "1week", "1month"
]
INTERVAL_NAMES: tuple[str, ...] = get_args(Interval)

REAL_API_BASE_URL = "https://api.twelvedata.com"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8090"
REAL_STREAM_URL = "wss://ws.twelvedata.com/v1/quotes/price"
DEFAULT_SANDBOX_STREAM_URL = "ws://127.0.0.1:8091"
STREAM_PATH = "/v1/quotes/price"
DEFAULT_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "BTC/USD", "ETH/USD", "SOL/USD")

# Ticker, optional /QUOTE for crypto and forex pairs; nothing that could reach SQL text or a path.
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,11}(/[A-Z0-9]{2,12})?$")

S = TypeVar("S", bound=BaseSettings)

LOADER_ROLE = "marketpipe_loader"
READER_ROLE = "marketpipe_reader"
FETCHER_ROLE = "marketpipe_fetcher"
TRANSFORMER_ROLE = "marketpipe_transformer"
STREAMER_ROLE = "marketpipe_streamer"
ServiceRole = Literal["loader", "reader", "fetcher", "transformer", "streamer"]


_DEPTH = re.compile(r"^(\d{1,3})\s*([yd])$")


def parse_depth(raw: str) -> date | timedelta | None:
    """BACKFILL_SINCE: a date (2024-01-01), a depth (2y, 90d) or none; ValueError otherwise."""
    text = raw.strip().lower()
    if text in ("", "none", "off"):
        return None
    if match := _DEPTH.fullmatch(text):
        count, unit = int(match.group(1)), match.group(2)
        if count == 0:
            return None
        return timedelta(days=count * (365 if unit == "y" else 1))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{raw!r}: expected a date (2024-01-01), a depth (2y, 90d) or none"
        ) from None


def validate_symbol(raw: str) -> str:
    """Return the canonical (upper-case, stripped) symbol or raise ValueError."""
    symbol = raw.strip().upper()
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise ValueError(f"{raw!r} is not a valid symbol (expected e.g. AAPL or BTC/USD)")
    return symbol


class Settings(BaseSettings):
    """Every knob of the pipeline; see the configuration table in README.md."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    twelve_data_api_key: SecretStr = SecretStr("")
    twelve_data_base_url: str = ""
    sandbox_url: str = DEFAULT_SANDBOX_URL
    sandbox_api_key: SecretStr = SecretStr("marketpipe-sandbox")
    http_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/pagila"
    loader_db_password: SecretStr = SecretStr("marketpipe-loader")
    reader_db_password: SecretStr = SecretStr("marketpipe-reader")
    fetcher_db_password: SecretStr = SecretStr("marketpipe-fetcher")
    transformer_db_password: SecretStr = SecretStr("marketpipe-transformer")
    redis_url: str = "redis://127.0.0.1:6379/0"

    symbols: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SYMBOLS
    # INTERVALS=1h,1day (INTERVAL, the older single name, is read too): fetched side by side.
    intervals: Annotated[tuple[Interval, ...], NoDecode] = Field(
        default=("1h",), validation_alias=AliasChoices("intervals", "interval")
    )
    # How deep a series is backfilled when its symbol is configured: a date, "2y", "90d"; "none"
    # turns the automatic backfill off.
    backfill_since: str = "2y"
    fetch_schedule: str = "5 * * * *"
    fetch_outputsize: int = Field(default=300, ge=1, le=5000)
    # Stored bars asked again with the new ones: the still-open bar completes, restatements show.
    fetch_overlap_bars: int = Field(default=24, ge=1, le=4999)
    # The key's plan; the API's Api-Credits-Used + Api-Credits-Left headers override the minute.
    api_credits_per_minute: int = Field(default=8, ge=1, le=100_000)
    api_credits_per_day: int = Field(default=800, ge=1, le=100_000_000)
    fetch_max_attempts: int = Field(default=4, ge=1, le=20)
    fetch_backoff_seconds: float = Field(default=1.0, ge=0, le=300)
    reference_refresh_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # Between ticks, how often (API seconds) the fetcher looks for a restatement to re-fetch.
    restatement_poll_seconds: float = Field(default=60.0, gt=0, le=3600)

    blob_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    job_timeout_seconds: int = Field(default=300, ge=1)
    # Run jobs in the worker process instead of a horse forked per job (marketpipe/worker.py;
    # false: RQ's fork per job). Such a worker starts afresh (re-executes itself) after this
    # many jobs, or once its memory grew this much.
    worker_in_process: bool = True
    worker_max_jobs: int = Field(default=1000, ge=1)
    worker_max_rss_growth_mb: int = Field(default=256, ge=1)
    # In-process: a job still running this long after its timeout (it ignored the SIGALRM, or is
    # stuck in C code) ends by restarting the worker process, as RQ kills such a horse.
    worker_hard_timeout_grace_seconds: int = Field(default=60, ge=1, le=3600)
    dashboard_refresh_seconds: int = Field(default=60, ge=5, le=86400)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text for people, json (one object per line) for log shippers; see marketpipe/logs.py.
    log_format: Literal["text", "json"] = "text"
    # Compose: a file the fetcher's and the workers' loops touch, for the healthcheck (empty: none).
    heartbeat_file: str = ""

    # Live prices (services/streamer). Empty LIVE_SYMBOLS streams every configured symbol.
    live_symbols: Annotated[tuple[str, ...], NoDecode] = ()
    live_max_symbols: int = Field(default=8, ge=1, le=10_000)  # the plan's WebSocket credits
    live_ring_size: int = Field(default=100, ge=1, le=100_000)
    live_retention_days: int = Field(default=7, ge=1, le=3650)
    live_buffer_max_bars: int = Field(default=100_000, ge=1, le=10_000_000)
    live_heartbeat_seconds: float = Field(default=10.0, gt=0, le=300)
    twelve_data_stream_url: str = ""
    sandbox_stream_url: str = DEFAULT_SANDBOX_STREAM_URL
    streamer_db_password: SecretStr = SecretStr("marketpipe-streamer")

    @field_validator("live_symbols", mode="before")
    @classmethod
    def _split_live_symbols(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        return tuple(dict.fromkeys(validate_symbol(str(s)) for s in items if str(s).strip()))

    @field_validator("twelve_data_stream_url", "sandbox_stream_url")
    @classmethod
    def _check_stream_url(cls, value: str) -> str:
        if value and not value.startswith(("ws://", "wss://")):
            raise ValueError("expected a ws(s) URL")
        if "apikey" in value.lower():
            raise ValueError("give the URL without its apikey (the key is added from the secret)")
        return value.rstrip("/")

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        symbols = tuple(dict.fromkeys(validate_symbol(str(s)) for s in items if str(s).strip()))
        if not symbols:
            raise ValueError("at least one symbol is required")
        return symbols

    @field_validator("intervals", mode="before")
    @classmethod
    def _split_intervals(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        names = tuple(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
        unknown = [n for n in names if n not in INTERVAL_NAMES]
        if unknown:
            raise ValueError(
                f"unknown interval {', '.join(unknown)} (expected some of"
                f" {', '.join(INTERVAL_NAMES)}, comma-separated; INTERVAL is read as INTERVALS)"
            )
        if not names:
            raise ValueError("at least one interval is required")
        return names

    @field_validator("backfill_since")
    @classmethod
    def _check_backfill_since(cls, value: str) -> str:
        parse_depth(value)
        return value.strip().lower()

    @field_validator("fetch_schedule")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        try:
            CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"not a cron expression ({exc})") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        url = make_url(value)
        if not url.drivername.startswith("postgresql") or not url.database:
            raise ValueError("expected postgresql://user[:password]@host:port/database")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://host:port/db")
        return value

    @field_validator("twelve_data_base_url", "sandbox_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_demo_passwords_with_a_key(self) -> Settings:
        """With a real API key, a role password given as the demo default is refused."""
        if self.demo_mode:
            return self
        refused = [
            name.upper()
            for name in sorted(self.model_fields_set)
            if name.endswith("_db_password")
            and getattr(self, name) == type(self).model_fields[name].default
        ]
        if refused:
            raise ValueError(
                f"{', '.join(refused)}: the demo password is refused outside demo mode"
                " (TWELVE_DATA_API_KEY is set); choose your own"
            )
        return self

    @property
    def interval(self) -> str:
        """The first of INTERVALS: the one a single-series command works on by default."""
        return self.intervals[0]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; ``interval`` in ``update`` means ``intervals=(interval,)``, as INTERVAL does
        in the environment (a copy is not validated: the property would silently stay)."""
        if update and "interval" in update:
            update = {k: v for k, v in update.items() if k != "interval"} | {
                "intervals": (update["interval"],)
            }
        return super().model_copy(update=update, deep=deep)

    def for_interval(self, interval: str) -> Settings:
        """These settings narrowed to one interval (a cycle, backfill or restatement of it)."""
        return self.model_copy(update={"intervals": (interval,)})

    def backfill_start(self, today: date) -> date | None:
        """The first day BACKFILL_SINCE asks for, seen on ``today``; None when it is off."""
        depth = parse_depth(self.backfill_since)
        if depth is None or isinstance(depth, date):
            return depth
        return today - depth

    @property
    def demo_mode(self) -> bool:
        """True without an API key: data comes from our sandbox, never from Twelve Data."""
        return not self.twelve_data_api_key.get_secret_value()

    @property
    def api_base_url(self) -> str:
        if self.twelve_data_base_url:
            return self.twelve_data_base_url
        return self.sandbox_url.rstrip("/") if self.demo_mode else REAL_API_BASE_URL

    @property
    def stream_base_url(self) -> str:
        """The price stream's URL without the key (safe to log); mirrors api_base_url."""
        if self.twelve_data_stream_url:
            return self.twelve_data_stream_url
        return self.sandbox_stream_url + STREAM_PATH if self.demo_mode else REAL_STREAM_URL

    @property
    def live_symbol_list(self) -> tuple[str, ...]:
        """LIVE_SYMBOLS, or every configured symbol (the streamer applies LIVE_MAX_SYMBOLS)."""
        return self.live_symbols or self.symbols

    @property
    def api_key(self) -> SecretStr:
        return self.sandbox_api_key if self.demo_mode else self.twelve_data_api_key

    @property
    def data_source(self) -> str:
        return "demo" if self.demo_mode else "twelvedata"

    @cached_property
    def admin_url(self) -> URL:
        return make_url(self.database_url)

    def role_url(self, role: ServiceRole) -> URL:
        """The database URL with the credentials of one service's least-privilege role."""
        name, password = {
            "loader": (LOADER_ROLE, self.loader_db_password),
            "reader": (READER_ROLE, self.reader_db_password),
            "fetcher": (FETCHER_ROLE, self.fetcher_db_password),
            "transformer": (TRANSFORMER_ROLE, self.transformer_db_password),
            "streamer": (STREAMER_ROLE, self.streamer_db_password),
        }[role]
        return self.admin_url.set(username=name, password=password.get_secret_value())


def _variable(env_prefix: str, loc: tuple[int | str, ...]) -> str:
    """The variable of an error: a field's name prefixed, or an alias (already a whole name)."""
    name = ".".join(str(p) for p in loc).upper()
    return name if env_prefix and name.startswith(env_prefix) else f"{env_prefix}{name}"


def settings_or_exit(factory: Callable[[], S], *, program: str, env_prefix: str = "") -> S:
    """Build settings from the environment, or exit naming every malformed variable."""
    try:
        return factory()
    except ValidationError as exc:
        lines = [
            f"  {_variable(env_prefix, err['loc'])}: {err['msg']}"
            if err["loc"]
            else f"  {err['msg']}"  # a check across variables names them itself
            for err in exc.errors()
        ]
        sys.stderr.write(f"{program}: invalid configuration\n" + "\n".join(lines) + "\n")
        raise SystemExit(2) from None


def load_settings() -> Settings:
    """The pipeline's settings, or exit naming every malformed variable."""
    return settings_or_exit(Settings, program="marketpipe")
