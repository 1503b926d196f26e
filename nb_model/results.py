"""Plain result objects: `Generation` and `Usage`."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any


_KEYLIKE = re.compile(r"(?i)\b(bearer\s+|(?:sk|pk|rk)-|(?:api[_-]?key|token|password)[=:]\s*)[^\s'\",;]{4,}")


def _error_line(error: str, width: int = 200) -> str:
    """An error message for a repr: its first line, shortened, anything key-like masked."""
    line = _KEYLIKE.sub(r"\1***", str(error).strip().split("\n", 1)[0])
    return line if len(line) <= width else line[: width - 1] + "…"


@dataclass
class Usage:
    """Token counts of one generation (as reported by the server, else estimated)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # a count (or both) is nb_model's estimate: the server reported none

    def __repr__(self) -> str:  # `estimated` only when it is true
        extra = ", estimated=True" if self.estimated else ""
        return f"Usage(prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens}{extra})"

    def label(self) -> str:
        """`12 → 40 tokens`, or `~12 → ~40 tokens` when the counts are estimates."""
        mark = "~" if self.estimated else ""
        return f"{mark}{self.prompt_tokens} → {mark}{self.completion_tokens} tokens"

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
    protocol: str = ""  # the wire protocol it was made with (seed, openai, openai-completions)
    params: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    error: str | None = None
    cost_usd: float = 0.0
    tool_calls: list[dict] | None = None  # the tool calls this reply asks for (OpenAI's shape)
    exchange: dict[str, Any] | None = None  # a tool exchange: messages, calls with results, steps

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        head = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        error = f", error={_error_line(self.error)!r}" if self.error else ""
        return (
            f"Generation(text={head!r}, finish_reason={self.finish_reason!r}{error}, "
            f"model={self.model!r}, tokens={'~' if self.usage.estimated else ''}"
            f"{self.usage.prompt_tokens}/{self.usage.completion_tokens}, "
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
