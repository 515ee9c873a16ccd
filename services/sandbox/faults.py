"""Fault injection: scripted (the next N calls) or random (seeded probability) misbehaviour.

Spec syntax (``SANDBOX_FAULTS`` or the admin endpoint): comma-separated items ``NAME`` (next
call), ``NAME*N`` (next N calls) or ``NAME@P`` (each call with probability P), optionally
followed by ``:ENDPOINT`` (default ``time_series``; ``*`` = every API endpoint), e.g.
``server_error*2,gaps@0.1,rate_limit*3:*``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass

FAULT_NAMES: tuple[str, ...] = (
    "rate_limit",  # HTTP 429 out-of-credits answer without touching the real budget
    "server_error",  # HTTP 500 JSON error body
    "bad_gateway",  # HTTP 502 with an HTML body, as a gateway in front of the API gives
    "slow",  # the answer comes after SANDBOX_SLOW_SECONDS, past a client's timeout
    "malformed_json",  # HTTP 200 with a truncated JSON body
    "duplicate_bars",  # some bars appear twice with the same datetime
    "gaps",  # some bars are missing
    "unknown_symbol",  # one symbol of the request answers 'not found'
    "empty_values",  # status ok with values: []
    "correct_bar",  # the vendor fixes one complete bar of the first symbol for good (actions.py)
    # WebSocket price stream (endpoint "stream", drawn on each emission round of a connection)
    "stream_drop",  # the server drops the connection without a close frame
    "stream_stall",  # the connection stays open but sends nothing, not even heartbeat replies
    "stream_malformed",  # one frame that is not JSON
    "stream_out_of_order",  # one price event older than the symbol's previous one
    "stream_future",  # one price event dated a day ahead (a known quirk of the real stream)
    "stream_unknown_symbol",  # one price event for a symbol nobody subscribed to
)
STREAM_ENDPOINT = "stream"
STREAM_FAULTS = tuple(name for name in FAULT_NAMES if name.startswith("stream_"))
ALIASES = {"429": "rate_limit", "500": "server_error", "502": "bad_gateway"}
ANY_ENDPOINT = "*"


@dataclass
class FaultRule:
    """One fault: fires for the next ``remaining`` calls, or with ``probability`` per call."""

    name: str
    endpoint: str = "time_series"
    remaining: int | None = 1
    probability: float = 0.0

    def matches(self, endpoint: str) -> bool:
        return self.endpoint in (ANY_ENDPOINT, endpoint)


def canonical_fault_name(raw: str) -> str:
    name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
    if name not in FAULT_NAMES:
        raise ValueError(f"unknown fault {raw!r}; expected one of {', '.join(FAULT_NAMES)}")
    return name


def make_rule(
    name: str,
    *,
    count: int | None = None,
    probability: float | None = None,
    endpoint: str = "time_series",
) -> FaultRule:
    """Validate and build a rule: a count (scripted) or a probability (random), not both."""
    if count is not None and probability is not None:
        raise ValueError("give either count or probability, not both")
    endpoint = endpoint.strip().strip("/") or "time_series"
    if canonical_fault_name(name) in STREAM_FAULTS and endpoint == "time_series":
        endpoint = STREAM_ENDPOINT  # the default endpoint of a stream fault is the stream
    if probability is not None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        return FaultRule(canonical_fault_name(name), endpoint, None, probability)
    remaining = 1 if count is None else count
    if remaining < 1:
        raise ValueError("count must be at least 1")
    return FaultRule(canonical_fault_name(name), endpoint, remaining, 0.0)


def parse_fault_spec(spec: str) -> list[FaultRule]:
    """Parse the spec syntax described in the module docstring."""
    rules: list[FaultRule] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        body, _, endpoint = item.partition(":")
        endpoint = endpoint or "time_series"
        try:
            if "@" in body:
                name, _, probability = body.partition("@")
                rules.append(make_rule(name, probability=float(probability), endpoint=endpoint))
            elif "*" in body:
                name, _, count = body.partition("*")
                rules.append(make_rule(name, count=int(count), endpoint=endpoint))
            else:
                rules.append(make_rule(body, endpoint=endpoint))
        except ValueError as exc:
            raise ValueError(f"bad fault item {item!r}: {exc}") from None
    return rules


class FaultInjector:
    """Thread-safe fault queue; random draws use a seeded RNG so a run can be replayed."""

    def __init__(self, rules: list[FaultRule] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = list(rules or [])
        self._rng = random.Random(seed)
        self._seed = seed

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def script(self, name: str, count: int = 1, endpoint: str = "time_series") -> None:
        """Make the next ``count`` calls of ``endpoint`` fail with fault ``name``."""
        self.add(make_rule(name, count=count, endpoint=endpoint))

    def set_probability(self, name: str, probability: float, endpoint: str = "time_series") -> None:
        self.add(make_rule(name, probability=probability, endpoint=endpoint))

    def clear(self, seed: int | None = None) -> None:
        """Drop every rule and restart the random sequence."""
        with self._lock:
            self._rules.clear()
            self._rng = random.Random(self._seed if seed is None else seed)
            if seed is not None:
                self._seed = seed

    def draw(self, endpoint: str) -> str | None:
        """The fault for this call, if any: scripted rules first (in order), then random ones."""
        with self._lock:
            for rule in self._rules:
                if rule.remaining is not None and self._applies(rule, endpoint):
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                    return rule.name
            for rule in self._rules:
                if (
                    rule.remaining is None
                    and self._applies(rule, endpoint)
                    and self._rng.random() < rule.probability
                ):
                    return rule.name
            return None

    @staticmethod
    def _applies(rule: FaultRule, endpoint: str) -> bool:
        # HTTP faults never fire on the stream and stream faults never on HTTP, even with "*".
        is_stream = rule.name in STREAM_FAULTS
        return rule.matches(endpoint) and is_stream == (endpoint == STREAM_ENDPOINT)

    def rules(self) -> list[dict[str, object]]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]
