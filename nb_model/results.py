"""Plain result objects: `Generation` and `Usage`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Usage:
    """Token counts of one generation (as reported by the server, else estimated)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Generation:
    """The outcome of one call: text plus what a user needs to judge it."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    ttft_s: float | None = None
    latency_s: float | None = None
    cached: bool = False
    profile: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    error: str | None = None
    cost_usd: float = 0.0

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        head = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (
            f"Generation(text={head!r}, finish_reason={self.finish_reason!r}, "
            f"model={self.model!r}, tokens={self.usage.prompt_tokens}/{self.usage.completion_tokens}, "
            f"cached={self.cached})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Generation":
        data = dict(data)
        usage = data.pop("usage", None) or {}
        known = {f for f in cls.__dataclass_fields__}
        return cls(usage=Usage(**usage), **{k: v for k, v in data.items() if k in known})
