"""The one-line footer under an answer (model, tokens, timings, cost, cache) with its warnings, and
one-line notices."""
from __future__ import annotations

from .live import publish


def footer_line(gen, *, cap: int | None = None) -> tuple[str, list[str]]:
    """The one-line footer and any warning lines for a Generation."""
    u = gen.usage
    parts = [gen.model or gen.profile or "model", u.label()]
    if gen.ttft_s is not None:
        parts.append(f"first token {gen.ttft_s:.2f} s")
    if gen.latency_s is not None:
        parts.append(f"total {gen.latency_s:.2f} s")
    parts.append(f"finish: {gen.finish_reason or '?'}")
    exchange = getattr(gen, "exchange", None)
    if exchange:  # a tool exchange: how many calls, and whether the protocol's tool wire was used
        calls = len(exchange.get("calls") or [])
        parts.append(f"{calls} tool call{'s' if calls != 1 else ''} in {exchange.get('steps', 0)} steps"
                     + (" (tools emulated by prompt)" if exchange.get("emulated") else ""))
    if gen.cost_usd:  # a hit costs nothing: it shows what it saved
        parts.append(f"$0 (saved ${gen.cost_usd:.4f})" if gen.cached else f"${gen.cost_usd:.4f}")
    if gen.cached:
        parts.append("cached")
    warnings = []
    if gen.finish_reason == "length":
        limit, cap = gen.params.get("max_tokens"), cap or 2048
        if not limit:
            warnings.append(f"truncated at the server's default length: raise --max-tokens (cap {cap})")
        elif limit >= cap:
            warnings.append(f"truncated at max_tokens={limit}, the cap: ask for a shorter answer or continue "
                            "in a --chat")
        else:
            warnings.append(f"truncated at max_tokens={limit}: raise --max-tokens (cap {cap})")
    elif gen.finish_reason == "content_filter":
        warnings.append("the answer was filtered by the server's content filter and is incomplete; it is not "
                        "cached, so a re-run asks again: rephrase the prompt and re-run the cell")
    elif gen.finish_reason == "max_steps":
        warnings.append("the model still asked for tools at the last step: raise --max-steps")
    if not gen.text and not gen.error and gen.finish_reason not in ("content_filter", "interrupted", "stopped",
                                                                    "error", "max_steps"):
        warnings.append("no text: a base model on a chat endpoint? try protocol openai-completions"
                        if gen.protocol == "openai" else "the model returned no text")
    return " · ".join(parts), warnings


def show_footer(gen, *, cap: int | None = None, note: str | None = None) -> None:
    line, warnings = footer_line(gen, cap=cap)
    if note:  # e.g. what is left of today's budget on a JupyterHub relay service
        line += f" · {note}"
    from .frontend import MIME, MUTED, WARN, footer_payload, html_line
    text = "\n".join([f"— {line}"] + [f"⚠ {w}" for w in warnings])
    html_lines = [html_line(f"— {line}", f"color:{MUTED}")] + [html_line(f"⚠ {w}", WARN) for w in warnings]
    meta = {"nb_model": {
        "model": gen.model, "profile": gen.profile, "params": gen.params,
        "usage": {"prompt_tokens": gen.usage.prompt_tokens, "completion_tokens": gen.usage.completion_tokens,
                  "estimated": gen.usage.estimated},
        "finish_reason": gen.finish_reason, "cached": gen.cached, "request_id": gen.request_id,
    }}
    publish({MIME: footer_payload(gen, warnings, note), "text/plain": text, "text/html": "".join(html_lines)},
             metadata=meta)


def show_notice(msg: str) -> None:
    from .frontend import MUTED, html_line
    publish({"text/plain": msg, "text/html": html_line(msg, f"color:{MUTED}")})
