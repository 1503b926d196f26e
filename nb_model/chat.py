"""Multi-turn conversations for `%%generate --chat [NAME]`, kept per shell (`%generate chat`: see `commands`).

Earlier turns travel as `messages` to the client core (chat messages for
`openai`, a transcript prompt for `seed`); a turn joins the conversation only
when its generation completed.
"""
from __future__ import annotations

import weakref

from .errors import ConfigError

DEFAULT = "default"
_by_shell: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class Conversation:
    """A named list of user/assistant messages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.turns: list[dict] = []

    def messages(self) -> list[dict]:
        return [dict(m) for m in self.turns]

    def add(self, prompt: str, gen) -> bool:
        """Append the exchange if the answer is complete; True when added."""
        from .client import INCOMPLETE
        if gen.finish_reason in INCOMPLETE or not gen.text:
            return False
        self.turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": gen.text}]
        return True

    def reset(self) -> None:
        self.turns.clear()


def conversations(shell) -> dict[str, Conversation]:
    if shell not in _by_shell:
        _by_shell[shell] = {}
    return _by_shell[shell]


def conversation(shell, name: str | None) -> Conversation:
    name = name or DEFAULT
    if not name.isidentifier():
        raise ConfigError(f"a chat name is a word like 'default' or 'review', got {name!r}")
    chats = conversations(shell)
    if name not in chats:
        chats[name] = Conversation(name)
    return chats[name]
