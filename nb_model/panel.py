"""`Panel`: an ipywidgets workbench for prototyping prompts; `%generate panel` shows one.

Generation runs in a background thread through the client core. The thread never
writes to an Output widget (output from threads lands in the wrong cell); it sets
the `value` of HTML widgets, at most MAX_UPDATES_PER_S times a second.
ipywidgets is imported only when a panel is made.
"""
from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import params as table
from .compare import Job, one_line, parse_compare, run_jobs, start_jobs
from .display.compare import error_html, muted_html, stats_html, status_html, text_html
from .errors import ConfigError

MAX_UPDATES_PER_S = 20  # the panel's live widgets refresh at most this often

LANGUAGES = ["en", "fr", "de", "es"]
BYTES_PER_S = 50_000  # long texts update less often: each update re-sends the whole value


@dataclass
class PanelRun:
    """One press of Generate: the settings used and, per column, (label, Generation, text, error, cap)."""

    settings: dict[str, Any]
    columns: list[tuple[str, Any, str, str | None, int]] = field(default_factory=list)

    @property
    def generations(self) -> list:
        return [c[1] for c in self.columns]

    def title(self, number: int) -> str:
        prompt = " ".join(self.settings["prompt"].split())
        prompt = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        extra = f" · compare {len(self.columns)}" if self.settings.get("compare") else ""
        return f"#{number} {prompt}{extra}"


class _Column:
    """One output column: header (compare only), streamed text, stats."""

    def __init__(self, widgets, label: str | None) -> None:
        self.header = widgets.HTML(f"<b>{label}</b>" if label else "")
        self.body = widgets.HTML(text_html(""))
        self.body.add_class("nb-model-output")
        self.stats = widgets.HTML("")
        self.box = widgets.VBox([self.header, self.body, self.stats],
                                layout=widgets.Layout(flex="1 1 0", min_width="0", padding="0 6px"))
        self.text = ""
        self._sent = 0.0

    def close(self) -> None:
        """Release the column's widget models in the kernel (and their layouts and styles)."""
        for w in (self.header, self.body, self.stats, self.box):
            for part in (getattr(w, "layout", None), getattr(w, "style", None)):
                if part is not None:
                    part.close()
            w.close()

    def show(self, text: str, *, final: bool = False) -> None:
        """Update the text at a bounded, size-aware rate (every update re-sends the whole value)."""
        now = time.monotonic()
        interval = max(1 / MAX_UPDATES_PER_S, len(text) / BYTES_PER_S)
        if text != self.text and (final or now - self._sent >= interval):
            self.body.value = text_html(text)
            self.text, self._sent = text, now


class Panel:
    """A prompt workbench: edit the prompt and knobs, press Generate, compare variants side by side.

    `Panel(prompt="Explain {topic}", profile="sandbox", temperature=0.2)`; display it in a cell.
    Each widget is an attribute (`panel.prompt`, `panel.temperature`, `panel.generate_button`, ...).
    """

    def __init__(self, prompt: str = "", *, system: str | None = None, profile: str | None = None,
                 model: str | None = None, temperature: float | None = None, top_p: float | None = None,
                 top_k: int | None = None, max_tokens: int | None = None, language: str | None = None,
                 stream: bool = True, cache: bool = True, compare: str = "", shell=None) -> None:
        import ipywidgets as w

        from .config import load_profiles, resolve_profile

        self._w = w
        self.shell = shell
        prof = resolve_profile(profile)
        given = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "max_tokens": max_tokens,
                 "language": language}
        table.validate_params(given, prof)
        outside = {k: v for k, v in given.items() if v is not None and table.BY_NAME[k].knob
                   and not _fits(table.BY_NAME[k].knob, v, prof.max_tokens_cap)}
        if outside:
            top_p_knob, top_k_knob = table.BY_NAME["top_p"].knob, table.BY_NAME["top_k"].knob
            raise ConfigError(f"the panel's knobs take top_p from {top_p_knob.low:g} and top_k up to "
                              f"{top_k_knob.high:g}, got top_p={top_p}, top_k={top_k}")
        self.profiles = load_profiles()[0]
        defaults = prof.defaults
        wide = w.Layout(width="98%")
        style = {"description_width": "90px"}

        self.prompt = w.Textarea(prompt, description="prompt", placeholder="Explain {topic} in plain words.",
                                 rows=4, layout=wide, style=style)
        self.system = w.Textarea(system or "", description="system", placeholder="optional instructions",
                                 rows=1, layout=wide, style=style)
        self.profile = w.Dropdown(options=sorted(self.profiles), value=prof.name, description="profile",
                                  style=style, layout=w.Layout(width="250px"))
        models = sorted({p.model for p in self.profiles.values() if p.model} | ({model} if model else set()))
        self.model = w.Combobox(value=model or "", options=models, placeholder="profile's model",
                                description="model", ensure_option=False, style=style,
                                layout=w.Layout(width="280px"))
        self.language = w.Combobox(value=language or defaults.get("language") or "", options=LANGUAGES,
                                   placeholder="any", description="language", style=style,
                                   layout=w.Layout(width="200px"))
        start = table.merge(given, defaults)  # the caller's values, else the profile's; else the knob's own
        for name in ("temperature", "top_p", "top_k", "max_tokens"):
            setattr(self, name, _knob(w, name, start[name], prof.max_tokens_cap, style))
        self.stream = w.Checkbox(value=stream, description="stream", indent=False, layout=w.Layout(width="90px"))
        self.cache = w.Checkbox(value=cache, description="cache", indent=False, layout=w.Layout(width="90px"))
        self.compare = w.Text(value=compare, description="compare", layout=wide, style=style,
                              placeholder="2-4 variants side by side, e.g. temperature=0.2,0.8; top_p=0.5,1 "
                                          "or system=be brief|be playful or {name}=a|b")
        self._actions(w, style)
        self.widget = self._layout(w)
        self.widget.add_class("nb-model-panel")
        self.prompt.add_class("nb-model-prompt")
        self.history: list[PanelRun] = []
        self._jobs: list[Job] = []
        self._columns: list[_Column] = []
        self._thread: threading.Thread | None = None
        self._quiet = False

    def _actions(self, w, style: dict) -> None:
        """The buttons, the history, the status line and the output area, wired to their actions."""
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.clear_button = w.Button(description="Clear", icon="eraser")
        self.cell_button = w.Button(description="To cell", icon="clipboard",
                                    tooltip="turn these settings into a %%generate cell")
        self.history_select = w.Dropdown(options=[], description="history", style=style, disabled=True)
        self.status = w.HTML("")
        self.status.add_class("nb-model-status")
        self.output = w.HBox([], layout=w.Layout(width="100%", max_height="480px", overflow="auto"))
        self.cell_text = w.Textarea("", rows=4, layout=w.Layout(width="98%", display="none"),
                                    description="cell", style=style)

        self.generate_button.on_click(lambda _: self.generate())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        self.cell_button.on_click(lambda _: self.to_cell())
        self.profile.observe(self._profile_changed, names="value")
        self.history_select.observe(self._history_picked, names="value")

    def _layout(self, w):
        """The knobs above, the buttons below, then the output."""
        return w.VBox([
            w.HBox([self.profile, self.model, self.language, self.stream, self.cache]),
            self.system, self.prompt,
            w.HBox([self.temperature, self.top_p]), w.HBox([self.max_tokens, self.top_k]),
            self.compare,
            w.HBox([self.generate_button, self.stop_button, self.clear_button, self.cell_button,
                    self.history_select]),
            self.cell_text, self.status, self.output,
        ])

    # -- display ----------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = f"nb_model Panel (profile {self.profile.value!r})"
        return bundle

    def __repr__(self) -> str:
        return f"Panel(profile={self.profile.value!r}, runs={len(self.history)}, running={self.running})"

    # -- settings -----------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The current knob values (the prompt as written, before `{name}` filling)."""
        return {
            "prompt": self.prompt.value, "system": self.system.value.strip() or None,
            "profile": self.profile.value, "model": self.model.value.strip() or None,
            "temperature": round(self.temperature.value, 4), "top_p": round(self.top_p.value, 4),
            "top_k": self.top_k.value or None, "max_tokens": self.max_tokens.value,
            "language": self.language.value.strip() or None,
            "stream": self.stream.value, "cache": self.cache.value, "compare": self.compare.value.strip(),
        }

    def apply(self, settings: dict[str, Any]) -> None:
        """Set the knobs from a `settings()` dict (used to go back to a run in the history)."""
        self.profile.value = settings["profile"]
        for name in ("prompt", "system", "model", "language", "compare"):
            getattr(self, name).value = settings[name] or ""
        for name in ("temperature", "top_p", "max_tokens", "stream", "cache"):
            getattr(self, name).value = settings[name]
        self.top_k.value = settings["top_k"] or 0

    def cell_source(self, settings: dict[str, Any] | None = None) -> str:
        """A `%%generate` cell that reproduces these settings."""
        s = settings or self.settings()
        opts = table.cell_options(s)
        opts += [] if s["stream"] else ["--no-stream"]
        opts += [] if s["cache"] else ["--no-cache"]
        opts += ["--compare", s["compare"]] if s["compare"] else []
        return "%%generate " + " ".join(shlex.quote(o) for o in opts) + "\n" + s["prompt"].strip("\n")

    # -- actions ------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def generate(self) -> None:
        """Start a run in a background thread (returns at once; `wait()` blocks until it ends)."""
        if self.running:
            return
        s = self.settings()
        try:
            from .template import references
            variants = parse_compare(s["compare"], references(s["prompt"])) if s["compare"] else [{}]
            params = {k: s[k] for k in ("temperature", "top_p", "top_k", "max_tokens", "language")}
            jobs = start_jobs(variants, template=s["prompt"], namespace=self._namespace(), system=s["system"],
                              profile=s["profile"], model=s["model"], params=params, stream=s["stream"],
                              cache="use" if s["cache"] else "off", on_retry=self._notice)
        except Exception as exc:  # noqa: BLE001 - one line in the panel, never a traceback
            self.status.value = error_html(one_line(exc))
            return
        self._jobs = jobs
        self.cell_text.layout.display = "none"  # its text described the previous settings
        self._show_columns([j.label if s["compare"] else None for j in jobs])
        self.status.value = muted_html("generating…")
        self._set_running(True)
        self._thread = threading.Thread(target=self._drive, args=(jobs, s), name="nb_model panel", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the running streams; the text so far is kept."""
        for job in self._jobs:
            job.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run ends; False if it is still running after `timeout` s."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def clear(self) -> None:
        """Empty the output and status (the history stays)."""
        if self.running:
            return
        self._show_columns([])
        self.status.value = ""

    def to_cell(self) -> str:
        """Put the settings into a new `%%generate` cell below (or show it as copyable text).

        From a click, the frontend extension inserts the cell (comm); a frontend without it closes
        the request unanswered and the text shows under the buttons instead."""
        from .display.frontend import insert_cell

        text = self.cell_source()
        shell = self._shell()
        self.cell_text.value = text

        def show_text():
            self.cell_text.layout.display = None

        def inserted():
            self.cell_text.layout.display = "none"
            self.status.value = muted_html("added a %%generate cell below")

        if _next_input_lands(shell):
            shell.set_next_input(text, replace=False)
            show_text()
        elif insert_cell(text, "code", on_done=inserted, on_missing=show_text) is None:
            show_text()
        return text

    def show(self, index: int) -> None:
        """Re-show run `index` of the history (its output, stats and settings)."""
        if self.running:
            return
        run = self.history[index]
        self._quiet = True
        try:
            self.apply(run.settings)
            self.history_select.value = index
        finally:
            self._quiet = False
        compare = bool(run.settings.get("compare"))
        self._show_columns([c[0] if compare else None for c in run.columns])
        for col, (_, gen, text, error, cap) in zip(self._columns, run.columns):
            col.show(text, final=True)
            if compare:
                col.stats.value = stats_html(gen, cap=cap, error=error)
        self.status.value = self._status(run)

    @property
    def text(self) -> str | list[str]:
        """The output text shown (a list of texts in compare mode)."""
        texts = [c.text for c in self._columns]
        return texts[0] if len(texts) == 1 else texts

    # -- internals ----------------------------------------------------------
    def _shell(self):
        if self.shell is not None:
            return self.shell
        from IPython import get_ipython
        return get_ipython()

    def _namespace(self) -> dict:
        shell = self._shell()
        return shell.user_ns if shell is not None else {}

    def _notice(self, message: str) -> None:
        self.status.value = muted_html(message)

    def _set_running(self, running: bool) -> None:
        self.generate_button.disabled = running
        self.clear_button.disabled = running
        self.history_select.disabled = running or not self.history
        self.stop_button.disabled = not running

    def _show_columns(self, labels: list[str | None]) -> None:
        for old in self._columns:
            old.close()
        self._columns = [_Column(self._w, label) for label in labels]
        self.output.children = [c.box for c in self._columns]

    def _refresh(self, final: bool = False) -> None:
        for col, job in zip(self._columns, self._jobs):
            col.show(job.text, final=final)

    def _drive(self, jobs: list[Job], settings: dict[str, Any]) -> None:
        """The background thread: run the jobs, stream into the columns, then record the run."""
        try:
            run_jobs(jobs, on_tick=self._refresh, interval=1 / MAX_UPDATES_PER_S)
            self._refresh(final=True)
            run = PanelRun(settings, [(j.label, j.generation, j.text, j.error, j.cap) for j in jobs])
            if settings["compare"]:
                for col, job in zip(self._columns, jobs):
                    col.stats.value = stats_html(job.generation, cap=job.cap, error=job.error)
            self.history.append(run)
            self._quiet = True
            try:
                self.history_select.options = [(r.title(i + 1), i) for i, r in enumerate(self.history)]
                self.history_select.value = len(self.history) - 1
            finally:
                self._quiet = False
            self.status.value = self._status(run)
        except Exception as exc:  # noqa: BLE001 - one line in the panel, never a traceback
            self.status.value = error_html(one_line(exc))
        finally:
            self._set_running(False)  # before dropping the thread, so wait() never returns ahead of it
            self._thread = None

    @staticmethod
    def _status(run: PanelRun) -> str:
        return status_html(run.columns, compare=bool(run.settings.get("compare")))

    def _profile_changed(self, change) -> None:
        cap = self.profiles[change["new"]].max_tokens_cap
        self.max_tokens.max = cap
        self.max_tokens.value = min(self.max_tokens.value, cap)

    def _history_picked(self, change) -> None:
        if not self._quiet and change["new"] is not None:
            self.show(change["new"])


def _fits(knob: table.Knob, value, cap: int) -> bool:
    high = cap if knob.high is None else knob.high
    return knob.low <= value <= high


def _knob(w, name: str, value, cap: int, style: dict):
    """The widget of a numeric setting, as the parameter table describes it (`value` None: its start)."""
    knob = table.BY_NAME[name].knob
    high = cap if knob.high is None else knob.high
    value = min(knob.start if value is None else value, high)
    options = dict(value=value, min=knob.low, max=high, description=name, style=style)
    if knob.step is not None:
        options["step"] = knob.step
    if knob.widget == "BoundedIntText":  # a number box: 0 turns the setting off
        options.update(tooltip="0 = off", layout=w.Layout(width="180px"))
    return getattr(w, knob.widget)(**options)


def _next_input_lands(shell) -> bool:
    """set_next_input works in a terminal shell and while a cell runs; from a widget click the
    kernel would hold it until some later cell finishes, so there we only show the text."""
    if shell is None:
        return False
    parent = getattr(shell, "parent_header", None)
    if parent is None:
        return True
    return (parent.get("header") or {}).get("msg_type") == "execute_request"


def cmd_panel(magics, words: list[str]) -> Panel:
    """A prompt workbench (widgets): knobs, Generate/Stop, compare, history; words after it = prompt."""
    configured = {n: getattr(magics, n) for n in table.TRAITS}
    knobs = {n: configured[n] for n in table.PANEL if n != "profile"}
    return Panel(" ".join(words), profile=configured["profile"], stream=configured["stream"], shell=magics.shell,
                 **knobs)
