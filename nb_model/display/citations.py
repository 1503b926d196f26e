"""The passages an answer of `%%generate --context` cites: collapsible in HTML, indented in text."""
from __future__ import annotations

import html

from ..retrieval.prompt import cited


def citations_bundle(answer: str, passages: list) -> dict | None:
    """A MIME bundle listing the cited passages (collapsible in HTML, indented text otherwise); when the
    answer cites none, the passages that were sent. None when no passage was sent."""
    if not passages:
        return {"text/plain": "(no passage of the context matches the question)",
                "text/html": '<div style="color:#777;font-size:85%">(no passage of the context matches the '
                             'question)</div>'}
    good, bad = cited(answer, len(passages))
    numbers = good or list(range(1, len(passages) + 1))
    title = "cited passages" if good else "passages sent (none cited)"
    plain = [f"{title}:"]
    rich = [f'<div style="font-size:85%;color:#555">{title}:</div>']
    for n in numbers:
        p = passages[n - 1]
        body = p.text.strip()
        plain.append(f"[{n}] {p.where} (score {p.score:.2f})")
        plain += ["    " + line for line in body.splitlines() if line.strip()]
        rich.append(f'<details><summary>[{n}] {html.escape(p.where)} '
                    f'<span style="color:#777">(score {p.score:.2f})</span></summary>'
                    f'<div style="white-space:pre-wrap;margin:0.3em 0 0.6em 1.5em">{html.escape(body)}</div>'
                    f'</details>')
    if bad:
        warn = f"⚠ the answer cites {', '.join(f'[{n}]' for n in bad)}, which no sent passage has"
        plain.append(warn)
        rich.append(f'<div style="color:#b36b00;font-size:85%">{html.escape(warn)}</div>')
    return {"text/plain": "\n".join(plain), "text/html": "".join(rich)}


def show_citations(answer: str, passages: list) -> None:
    from IPython.display import display
    display(citations_bundle(answer, passages), raw=True)
