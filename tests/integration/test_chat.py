"""Multi-turn chat through the real magic and the sandbox over HTTP (seed transcript and openai messages)."""
import pytest

from conftest import requests_seen, run

TURN = "%%generate --max-tokens 10 -o g --chat {name}\n{prompt}"


@pytest.fixture
def chat(shell):
    """Run one chat turn; returns the Generation."""
    def turn(prompt: str, name: str = "") -> object:
        res, cap = run(shell, TURN.format(name=name, prompt=prompt))
        assert res.success, cap.stderr
        return shell.user_ns["g"]
    from nb_model.chat import conversations
    conversations(shell).clear()  # the shell outlives a test
    return turn


@pytest.mark.parametrize("protocol", ["seed", "openai"])
def test_turns_accumulate_and_are_sent(shell, sandbox, use_endpoint, chat, protocol):
    use_endpoint(sandbox, protocol)
    first = chat("My name is Ann.")
    second = chat("What is my name?")
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 8  # the earlier turn travelled along
    from nb_model.client import client_for
    direct = client_for().generate("What is my name?", max_tokens=10, cache="off", messages=[
        {"role": "user", "content": "My name is Ann."}, {"role": "assistant", "content": first.text}])
    assert (direct.text, direct.usage) == (second.text, second.usage)  # exactly that conversation was sent
    _, cap = run(shell, "%generate chat show")
    lines = cap.stdout.splitlines()
    assert lines[0] == "[user] My name is Ann." and lines[2] == "[user] What is my name?"
    assert lines[1] == f"[assistant] {first.text}" and len(lines) == 4
    fresh = chat("What is my name?", "other")  # another name: its own conversation
    alone = client_for().generate("What is my name?", max_tokens=10, cache="off")
    assert fresh.usage == alone.usage
    _, cap = run(shell, "%generate chat")
    assert "default: 2 turns" in cap.stdout and "other: 1 turns" in cap.stdout


def test_reset_and_failed_turns(shell, sandbox, use_endpoint, chat):
    use_endpoint(sandbox)
    res, cap = run(shell, "%generate chat reset")
    assert not res.success and "there is no chat named 'default' (no chats yet: start one with" in cap.stderr
    chat("Remember the number 7.")
    sandbox.inject("401")
    res, cap = run(shell, TURN.format(name="", prompt="And 8?"))
    assert not res.success and "HTTP 401" in cap.stdout + cap.stderr
    _, cap = run(shell, "%generate chat show")
    assert "And 8?" not in cap.stdout and cap.stdout.count("[user]") == 1  # a failed turn is not kept
    _, cap = run(shell, "%generate chat reset")
    assert "reset" in cap.stdout
    _, cap = run(shell, "%generate chat show")
    assert "is empty" in cap.stdout
    chat("Remember the colour blue.", "other")
    for sub in ("reset", "show"):  # a name that is not a chat: said, with the chats there are
        res, cap = run(shell, f"%generate chat {sub} nonexist")
        assert not res.success and "there is no chat named 'nonexist' (chats: default, other)" in cap.stderr
        assert "Traceback" not in cap.stdout + cap.stderr and len(cap.stderr.strip().splitlines()) == 1
    assert "blue" in run(shell, "%generate chat show other")[1].stdout  # nothing else was reset
    for bad, expect in [("chat forget", "use %generate chat"), ("chat show a b", "use %generate chat")]:
        res, cap = run(shell, f"%generate {bad}")
        assert not res.success and expect in cap.stderr
    res, cap = run(shell, "%%generate --chat 'two words'\nhello")
    assert not res.success and "a chat name is a word" in cap.stderr


def test_context_window_refusal_before_sending(shell, sandbox, chat, tmp_path, monkeypatch):
    config = tmp_path / "nb_model.toml"
    config.write_text(f'default = "small"\n[profiles.small]\nendpoint = "{sandbox.url}"\ncontext_window = 60\n')
    monkeypatch.setenv("NB_MODEL_CONFIG", str(config))
    turns = 0
    while True:
        res, cap = run(shell, TURN.format(name="", prompt="Tell me one more fact about owls."))
        if not res.success:
            break
        turns += 1
        assert turns < 10
    assert turns >= 1 and requests_seen(sandbox, turns) == turns  # refused before sending
    message = cap.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in cap.stdout
    assert "the chat" in message[0] and "needs about" in message[0] and "60-token context window" in message[0]
    assert "%generate chat reset" in message[0]
    run(shell, "%generate chat reset")
    res, _ = run(shell, TURN.format(name="", prompt="Tell me one more fact about owls."))
    assert res.success and requests_seen(sandbox, turns + 1) == turns + 1


def test_a_rerun_conversation_is_served_from_the_cache(shell, sandbox, use_endpoint, chat, monkeypatch):
    monkeypatch.delenv("NB_MODEL_CACHE")
    use_endpoint(sandbox, "openai")
    texts = [chat(p).text for p in ("Plan a picnic.", "Add a dessert.")]
    run(shell, "%generate chat reset")
    again = [chat(p) for p in ("Plan a picnic.", "Add a dessert.")]
    assert [g.text for g in again] == texts and all(g.cached for g in again)
    assert requests_seen(sandbox, 2) == 2
