"""Everything nb_model shows in a notebook; the other front ends compute, this package renders.

- `live`: an answer as it arrives (stdout for text, preview slices for rich formats), then its render
- `footer`: the one-line footer and warnings under an answer; one-line notices
- `table`: plain-text tables aligned by display width (line magics, the `--over` summary)
- `compare`: the compare table and the panel's columns and status
- `batch`: the `--over` summary and `generate_many`'s progress bar
- `tools`: each tool call of a `--tools` exchange
- `citations`: the passages an answer of `--context` cites
- `datasets`: the summaries of `--schema` and the evaluation's chart
- `frontend`: the payload nb_model's JupyterLab extension reads, theme colours, inserting a cell

Importing this package (or `live`, `footer`) stays light: IPython.display is imported when something shows.
"""
from .footer import footer_line, show_footer, show_notice
from .live import FORMATS, PREVIEW_INTERVAL, SLICE_CHARS, LiveOutput, in_kernel, publish, render_bundle, slice_end

__all__ = ["FORMATS", "PREVIEW_INTERVAL", "SLICE_CHARS", "LiveOutput", "footer_line", "in_kernel", "publish",
           "render_bundle", "show_footer", "show_notice", "slice_end"]
