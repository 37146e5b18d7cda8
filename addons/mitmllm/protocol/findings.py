"""Findings: what a validator reports about a flow.

A finding names a rule (``ANT-7``), carries a severity, a one-line message that says what broke
and what a client does about it, and where: the event number (0-based block index in the body)
and the byte offset of that block. Rules live in :mod:`mitmllm.rules`.

`Findings` collects them for one flow. A stream that breaks a rule on every event would drown
the rest, so only the first `MAX_PER_RULE` occurrences of a rule are kept; the others are counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from mitmllm.protocol.rules import RULES
from mitmllm.protocol.rules import Severity

__all__ = ["Finding", "Findings", "Severity"]

MAX_PER_RULE = 10


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    event: int | None = None
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.rule, "severity": str(self.severity)}
        if self.event is not None:
            d["event"] = self.event
        if self.offset is not None:
            d["offset"] = self.offset
        d["message"] = self.message
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            rule=d["rule"],
            severity=Severity(d["severity"]),
            message=d.get("message", ""),
            event=d.get("event"),
            offset=d.get("offset"),
        )

    def __str__(self) -> str:
        where = f" @event {self.event}" if self.event is not None else ""
        return f"{self.rule} ({self.severity}){where}: {self.message}"


class Findings:
    """An ordered, capped collection of findings for one flow."""

    __slots__ = ("items", "suppressed", "_seen")

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.suppressed: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()

    def add(
        self,
        rule_id: str,
        detail: str,
        *,
        event: int | None = None,
        offset: int | None = None,
        severity: Severity | None = None,
    ) -> None:
        """Record a finding. The rule's default severity applies unless one is given.

        The message is ``detail`` followed by the rule's client effect, so call sites say only
        what they saw.
        """
        rule = RULES.get(rule_id)
        if rule is None:  # a typo must not crash a flow; surface it instead
            rule_id, detail = "TAP-1", f"unregistered rule {rule_id!r}: {detail}"
            rule = RULES["TAP-1"]
        self._seen[rule_id] += 1
        if self._seen[rule_id] > MAX_PER_RULE:
            self.suppressed[rule_id] += 1
            return
        message = f"{detail}; {rule.effect}" if rule.effect else detail
        self.items.append(
            Finding(rule_id, severity or rule.severity, message, event=event, offset=offset)
        )

    def extend(self, findings: list[Finding]) -> None:
        for f in findings:
            self._seen[f.rule] += 1
            if self._seen[f.rule] > MAX_PER_RULE:
                self.suppressed[f.rule] += 1
            else:
                self.items.append(f)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def count(self, rule_id: str) -> int:
        """How often `rule_id` fired, including suppressed repeats."""
        return self._seen[rule_id]

    def rules(self) -> list[str]:
        """Rule IDs in order of first occurrence."""
        return list(dict.fromkeys(f.rule for f in self.items))

    def by_severity(self, severity: Severity) -> list[Finding]:
        return [f for f in self.items if f.severity == severity]

    @property
    def worst(self) -> Severity | None:
        if not self.items:
            return None
        return max((f.severity for f in self.items), key=lambda s: s.rank)

    def summary(self) -> str:
        """One line: ``ANT-7 x2, ANT-18`` (errors first), or ``ok``."""
        if not self.items:
            return "ok"
        order = sorted(self.rules(), key=lambda r: -self._severity_of(r).rank)
        parts = []
        for r in order:
            n = self._seen[r]
            parts.append(f"{r} x{n}" if n > 1 else r)
        return ", ".join(parts)

    def _severity_of(self, rule_id: str) -> Severity:
        return max((f.severity for f in self.items if f.rule == rule_id), key=lambda s: s.rank)

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.items]
