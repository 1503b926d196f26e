"""Server-sent events decoding (the subset chat-completion servers use)."""
from __future__ import annotations

from .lines import LineSplitter


class SSEDecoder:
    """feed(bytes) -> list of event data strings (several data: lines joined by newline)."""

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[str]:
        return self._events(self._lines.feed(data))

    def close(self) -> list[str]:
        events = self._events(self._lines.close())
        if self._data:  # last event without its blank line: keep it rather than lose text
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _events(self, lines: list[str]) -> list[str]:
        events = []
        for line in lines:
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            # event:, id:, retry: and unknown fields carry nothing we use
        return events
