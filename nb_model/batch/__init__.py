"""Many prompts at once (`generate_many`) and inputs longer than the context window
(`split_text`, `summarize_long`).

- `items`: what a batch is made of (a list, a pandas Series or DataFrame; templates filled per item)
- `runner`: `generate_many` (the workers, the shared backoff, the in-flight window, packing)
- `long`: `split_text`, `split_spans`, `summarize_long`
- `magic`: `%%generate --over VAR`
"""
from .items import fill_item
from .long import MAP_PROMPT, REDUCE_PROMPT, split_spans, split_text, summarize_long
from .runner import ERRORS, BatchResults, generate_many, last_run

__all__ = ["BatchResults", "ERRORS", "MAP_PROMPT", "REDUCE_PROMPT", "fill_item", "generate_many", "last_run", "split_spans",
           "split_text", "summarize_long"]
