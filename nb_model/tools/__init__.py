"""Python functions as tools a model may call: schemas, the call loop, its display.

    def sales_by_region(quarter: str) -> dict:
        "Total sales per region for a quarter like 'Q3'."
        ...

    %%generate --tools sales_by_region,top_products
    Which region sold most in Q3?

    nb_model.generate("Which region sold most in Q3?", tools=[sales_by_region])

Each call the model asks for runs in the kernel, is shown (name, arguments,
result preview, time) and its result goes back to the model, until it answers
(see `loop.run_tools`). On protocols without a tool wire (the seed API) the
exchange follows a prompt convention (`nb_model.protocols.tools`) and the footer
says it is emulated.
"""
from __future__ import annotations

from .toolset import Tool, as_tool, from_names, tool, toolset


def run_tools(prompt: str, tools, *, profile: str | None = None, model: str | None = None, **kw):
    """`nb_model.generate(prompt, tools=tools, ...)`: the exchange with the profile's client (see
    `loop.run_tools` for the options)."""
    from ..client import client_for
    from .loop import run_tools as run
    kw.setdefault("stream", False)
    return run(client_for(profile, model=model), prompt, tools, **kw)


__all__ = ["Tool", "as_tool", "from_names", "run_tools", "tool", "toolset"]
