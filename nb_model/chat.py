"""Multi-turn conversations for `%%generate --chat [NAME]`, kept per IPython shell.

Earlier turns travel as `messages` to the client core (chat messages for
`openai`, a transcript prompt for `seed`); a turn joins the conversation only
when its generation completed.
"""
from __future__ import annotations

import weakref

from IPython.core.error import UsageError

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
        raise UsageError(f"a chat name is a word like 'default' or 'review', got {name!r}")
    chats = conversations(shell)
    if name not in chats:
        chats[name] = Conversation(name)
    return chats[name]


def cmd_chat(magics, words: list[str]) -> None:
    """Conversations of %%generate --chat: chat [list] | show [NAME] | reset [NAME]."""
    sub, rest = (words[0], words[1:]) if words else ("list", [])
    if len(rest) > 1 or sub not in ("list", "show", "reset"):
        raise UsageError("use %generate chat list | show [NAME] | reset [NAME]")
    chats = conversations(magics.shell)
    if sub == "list":
        if not chats:
            print("no conversations yet: start one with %%generate --chat [NAME]")
        for chat in chats.values():
            print(f"{chat.name}: {len(chat.turns) // 2} turns")
        return
    name = rest[0] if rest else DEFAULT
    chat = chats.get(name)
    if chat is None:
        known = f"chats: {', '.join(chats)}" if chats else "no chats yet: start one with %%generate --chat [NAME]"
        raise UsageError(f"there is no chat named {name!r} ({known})")
    if sub == "reset":
        chat.reset()
        print(f"chat {name!r} reset")
        return
    if not chat.turns:
        print(f"chat {name!r} is empty")
        return
    for m in chat.turns:
        print(f"[{m['role']}] {m['content']}")
