"""Incremental byte → line splitting with UTF-8 decoding done here, not by requests.

Lines may end in LF, CRLF or a lone CR; a chunk boundary may fall anywhere,
including inside a multi-byte character or between CR and LF.
"""
from __future__ import annotations

import codecs
import re

_EOL = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""

    def feed(self, data: bytes) -> list[str]:
        self._buf += self._decoder.decode(data)
        return self._split(final=False)

    def close(self) -> list[str]:
        self._buf += self._decoder.decode(b"", final=True)
        return self._split(final=True)

    def _split(self, final: bool) -> list[str]:
        lines, start = [], 0
        for m in _EOL.finditer(self._buf):
            if m.group() == "\r" and m.end() == len(self._buf) and not final:
                break  # a CR at the end may be half of a CRLF still to come
            lines.append(self._buf[start:m.start()])
            start = m.end()
        self._buf = self._buf[start:]
        if final and self._buf:
            lines.append(self._buf)
            self._buf = ""
        return lines
