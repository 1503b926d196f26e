"""From prompts to datasets: structured extraction into DataFrame columns (`extract`) and prompt
evaluation over labelled rows (`evaluate`, scorers, `judge`). Needs the `datasets` extra
(pandas, jsonschema, json-repair); the chart of an evaluation uses matplotlib when installed."""
from __future__ import annotations

from .evaluate import Evaluation, evaluate
from .extract import extract
from .schema import to_json_schema
from .scorers import Judge, Scorer, judge

__all__ = ["Evaluation", "Judge", "Scorer", "evaluate", "extract", "judge", "to_json_schema"]
