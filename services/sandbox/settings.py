"""Settings of the sandbox Twelve Data server, read from ``SANDBOX_*`` environment variables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from marketpipe.settings import settings_or_exit
from services.sandbox.actions import parse_splits
from services.sandbox.faults import parse_fault_spec

DEFAULT_API_KEY = "marketpipe-sandbox"
DEMO_API_KEY = "demo"


def parse_key_credits(raw: str) -> dict[str, tuple[int, int]]:
    """Parse ``KEY=PER_MINUTE/PER_DAY,...`` (the ``/PER_DAY`` part optional, default 100x)."""
    plans: dict[str, tuple[int, int]] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        key, sep, budget = item.partition("=")
        if not sep or not key.strip():
            raise ValueError("expected KEY=PER_MINUTE[/PER_DAY] items separated by commas")
        minute_text, _, day_text = budget.partition("/")
        try:
            per_minute = int(minute_text)
            per_day = int(day_text) if day_text else per_minute * 100
        except ValueError:
            raise ValueError("credit budgets must be integers") from None
        if per_minute < 1 or per_day < 1:
            raise ValueError("credit budgets must be positive")
        plans[key.strip()] = (per_minute, per_day)
    return plans


def parse_clock_start(raw: str) -> datetime | None:
    """ISO date-time; naive values are UTC; empty means the real current time."""
    if not raw.strip():
        return None
    moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class SandboxSettings(BaseSettings):
    """Every knob of the sandbox; see services/sandbox/README.md."""

    model_config = SettingsConfigDict(
        env_prefix="SANDBOX_", case_sensitive=False, extra="ignore", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    # API keys are secrets in real deployments: keep them out of reprs and logs.
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(default=(DEFAULT_API_KEY,), repr=False)
    credits_per_minute: int = Field(default=8, ge=1)
    credits_per_day: int = Field(default=800, ge=1)
    key_credits: Annotated[dict[str, tuple[int, int]], NoDecode] = Field(
        default_factory=dict, repr=False
    )
    error_transport: Literal["modern", "legacy"] = "modern"
    symbol_error_style: Literal["not_found_400", "invalid_404"] = "not_found_400"
    clock_start: str = ""
    clock_speed: float = Field(default=1.0, ge=0, le=1_000_000)
    faults: str = ""
    # Corporate actions (actions.py): SYMBOL@YYYY-MM-DD=TO:FROM items, e.g. AAPL@2026-03-12=4:1.
    splits: str = ""
    fault_seed: int = 0
    slow_seconds: float = Field(default=35.0, ge=0, le=600)
    admin_token: SecretStr = SecretStr("")
    # The WebSocket price stream (stream.py): unset port = the HTTP port + 1 (ephemeral with 0).
    stream_port: int | None = Field(default=None, ge=0, le=65535)
    stream_tick_seconds: int = Field(default=1, ge=1, le=60)
    stream_refused_symbols: Annotated[tuple[str, ...], NoDecode] = ()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The stack's LOG_FORMAT (one format for every service's lines), or SANDBOX_LOG_FORMAT.
    log_format: Literal["text", "json"] = Field(
        default="text", validation_alias=AliasChoices("SANDBOX_LOG_FORMAT", "LOG_FORMAT")
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        keys = tuple(dict.fromkeys(str(k).strip() for k in items if str(k).strip()))
        if not keys:
            raise ValueError("at least one API key is required")
        return keys

    @field_validator("stream_tick_seconds")
    @classmethod
    def _check_tick_seconds(cls, value: int) -> int:
        if 60 % value:
            raise ValueError("must divide a minute (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)")
        return value

    @field_validator("stream_refused_symbols", mode="before")
    @classmethod
    def _split_refused(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        return tuple(str(s).strip().upper() for s in items if str(s).strip())

    @property
    def stream_bind_port(self) -> int:
        if self.stream_port is not None:
            return self.stream_port
        return self.port + 1 if self.port else 0

    @field_validator("key_credits", mode="before")
    @classmethod
    def _parse_key_credits(cls, value: object) -> dict[str, tuple[int, int]]:
        if isinstance(value, str):
            return parse_key_credits(value)
        return dict(value)  # type: ignore[call-overload,no-any-return]

    @field_validator("clock_start")
    @classmethod
    def _check_clock_start(cls, value: str) -> str:
        try:
            parse_clock_start(value)
        except ValueError as exc:
            raise ValueError(f"not an ISO date-time ({exc})") from None
        return value

    @field_validator("splits")
    @classmethod
    def _check_splits(cls, value: str) -> str:
        parse_splits(value)
        return value

    @field_validator("faults")
    @classmethod
    def _check_faults(cls, value: str) -> str:
        parse_fault_spec(value)
        return value

    @property
    def clock_start_at(self) -> datetime | None:
        return parse_clock_start(self.clock_start)

    def plan_for(self, api_key: str) -> tuple[int, int]:
        """(per_minute, per_day) budget of a key: its override or the defaults."""
        return self.key_credits.get(api_key, (self.credits_per_minute, self.credits_per_day))


def load_sandbox_settings() -> SandboxSettings:
    """Read settings from the environment, or exit naming every malformed variable."""
    return settings_or_exit(SandboxSettings, program="sandbox", env_prefix="SANDBOX_")
