"""The sandbox's credit ledger, remembering every charge: what per-minute credit goals read."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from services.sandbox.credits import CreditDecision, CreditLedger


class RecordingLedger(CreditLedger):
    """The sandbox's ledger, also remembering every charge: (API minute, cost, allowed)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.charges: list[tuple[int, int, bool]] = []

    def charge(self, api_key: str, cost: int, now: datetime) -> CreditDecision:
        decision = super().charge(api_key, cost, now)
        self.charges.append((int(now.timestamp()) // 60, cost, decision.allowed))
        return decision

    @property
    def refused(self) -> int:
        return sum(cost for _, cost, allowed in self.charges if not allowed)

    def per_minute(self) -> Counter[int]:
        """Credits granted in each API minute that had any."""
        used = Counter[int]()
        for minute, cost, allowed in self.charges:
            if allowed:
                used[minute] += cost
        return used
