"""`Index`: BM25 search over local documents (a file, a folder, a list of strings, a pandas column).

Files are read by suffix (`.txt`, `.md`, `.rst`, `.py`, `.ipynb` markdown and code cells, `.csv` rows,
`.pdf` pages through pypdf when it is installed), cut into passages of about `chunk_tokens` tokens (the
shared estimator) at paragraph or sentence ends, and ranked with BM25 (the `bm25s` library, imported on
first use). The passages and their BM25 terms are cached on disk beside the notebook's cache
(`.nb_model/index/`), keyed by each file's path, size and modification time: building the same index
again reads no unchanged file, and a changed file is read again alone.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError
from ..notices import progress_line
from . import text as textmod

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".py")
SUFFIXES = TEXT_SUFFIXES + (".ipynb", ".csv", ".pdf")
SKIP_DIRS = {".git", ".nb_model", ".ipynb_checkpoints", "__pycache__", "node_modules", ".venv"}
CACHE_VERSION = 2  # 2: line ranges of passages counted from where their text is
PROGRESS_AFTER_S = 1.0
# The last build of each folder in this process: (files' paths, sizes, mtimes) -> passages, terms, BM25 model.
# A re-run over unchanged files skips even the on-disk cache; one entry per folder, replaced on change.
_MEMORY: dict[tuple, tuple] = {}


@dataclass
class Passage:
    """One retrieved piece of a document: `text`, where it came from, and its BM25 `score`."""

    text: str
    source: str  # a file path relative to the indexed folder, or "item 3" / "row 7" for in-memory data
    location: str = ""  # "lines 3-9", "page 2", "cell 4", "row 12"
    score: float = 0.0

    @property
    def where(self) -> str:
        return f"{self.source}, {self.location}" if self.location else self.source

    def __repr__(self) -> str:
        head = " ".join(self.text.split())[:60]
        return f"Passage({self.where!r}, score={self.score:.2f}, {head!r}…)"


class _Unreadable(Exception):
    """A file that cannot be read; the rest of the index is built without it."""


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise _Unreadable("not UTF-8 or GB18030 text")


def _pieces(path: Path, budget: int) -> list[tuple[str, str]]:
    """(passage text, location) of one file."""
    suffix = path.suffix.lower()
    try:
        if suffix in TEXT_SUFFIXES:
            return [(t, f"lines {a}-{b}" if a != b else f"line {a}")
                    for t, a, b in textmod.chunks(_read_text(path), budget)]
        if suffix == ".ipynb":
            nb = json.loads(_read_text(path))
            out = []
            for n, cell in enumerate(nb.get("cells", []), 1):
                if cell.get("cell_type") in ("markdown", "code"):
                    src = cell.get("source", "")
                    src = "".join(src) if isinstance(src, list) else str(src)
                    out += [(t, f"cell {n}") for t, _, _ in textmod.chunks(src, budget)]
            return out
        if suffix == ".csv":
            rows = list(csv.reader(io.StringIO(_read_text(path))))
            if not rows:
                return []
            header, out = rows[0], []
            for n, row in enumerate(rows[1:], 2):
                line = "; ".join(f"{h}: {v}" for h, v in zip(header, row) if v.strip())
                out += [(t, f"row {n}") for t, _, _ in textmod.chunks(line, budget)]
            return out
        if suffix == ".pdf":
            from pypdf import PdfReader  # optional: pip install 'nb_model[pdf]'
            out = []
            for n, page in enumerate(PdfReader(str(path)).pages, 1):
                out += [(t, f"page {n}") for t, _, _ in textmod.chunks(page.extract_text() or "", budget)]
            return out
    except _Unreadable:
        raise
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - any broken file becomes one warning, the rest is indexed
        raise _Unreadable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}") \
            from None
    return []


def _cache_file(root: Path, budget: int) -> Path | None:
    from ..cache.location import sqlite_path
    db, _ = sqlite_path()
    if db is None:
        return None
    tag = hashlib.sha256(f"{root}\0{budget}".encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return Path(db).parent / "index" / f"{tag}.json"


def _default_progress() -> Callable[[int, int], None]:
    """A line 'indexing 120/400 files' that updates in place (a display in a notebook, stderr elsewhere)."""
    line = progress_line()

    def show(done: int, total: int) -> None:
        line(f"nb_model: indexing {done}/{total} files" + (" — done" if done == total else "…"), done == total)
    return show


class Index:
    """BM25 search over documents; `idx.search("termination notice", k=5)` → `Passage`s, best first.

    `source`: a file or folder path, a list of strings, a pandas Series (one passage per row) or
    DataFrame (each row as "column: value; …"). `chunk_tokens`: passage size. `cache=False`: do not use
    the on-disk cache. `idx.stats` counts files read and reused from the cache; `idx.warnings` lists
    files that were skipped.
    """

    def __init__(self, source, *, chunk_tokens: int = 200, cache: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> None:
        if not isinstance(chunk_tokens, int) or isinstance(chunk_tokens, bool) or chunk_tokens < 20:
            raise ConfigError(f"chunk_tokens must be an integer of at least 20, got {chunk_tokens!r}")
        self.chunk_tokens = chunk_tokens
        self.passages: list[Passage] = []
        self.warnings: list[str] = []
        self.stats = {"files": 0, "read": 0, "reused": 0, "skipped": 0, "passages": 0}
        self.source_label = ""
        self._memo_key = None  # this build's entry in _MEMORY, if it made or reused one
        self._bm25_memo = None
        terms: list[list[str]] = []
        if isinstance(source, (str, os.PathLike)):
            terms = self._from_path(Path(os.fspath(source)).expanduser(), cache, progress)
        else:
            terms = self._from_items(source)
        self._terms = terms
        self.stats["passages"] = len(self.passages)
        self._bm25 = None

    # -- building -------------------------------------------------------
    def _from_items(self, source) -> list[list[str]]:
        rows: Iterable[tuple[str, str]]
        if hasattr(source, "columns") and hasattr(source, "itertuples"):  # a DataFrame
            cols = [str(c) for c in source.columns]
            rows = (("row " + str(label), "; ".join(f"{c}: {v}" for c, v in zip(cols, values) if str(v).strip()))
                    for label, *values in source.itertuples(index=True))
            self.source_label = f"a DataFrame of {len(source)} rows"
        elif hasattr(source, "items") and hasattr(source, "dtype"):  # a Series
            rows = ((f"row {label}", value) for label, value in source.items())
            self.source_label = f"a Series of {len(source)} rows"
        elif isinstance(source, (list, tuple)) and all(isinstance(s, str) for s in source):
            rows = ((f"item {n}", s) for n, s in enumerate(source))
            self.source_label = f"a list of {len(source)} texts"
        else:
            kind = type(source).__name__
            if isinstance(source, (list, tuple)):
                bad = next(s for s in source if not isinstance(s, str))
                kind = f"a {kind} holding a {type(bad).__name__}"
            raise ConfigError(f"context must be a path, a list of strings, a pandas Series or DataFrame, or an "
                              f"nb_model.Index; got {kind}")
        terms = []
        for label, value in rows:
            if value is None or (isinstance(value, float) and value != value):  # missing values (NaN)
                continue
            for chunk, _, _ in textmod.chunks(str(value), self.chunk_tokens):
                self.passages.append(Passage(chunk, label))
                terms.append(textmod.words(chunk))
        if not self.passages:
            raise ConfigError(f"the context ({self.source_label}) holds no text to search")
        return terms

    def _documents(self, path: Path) -> tuple[Path, Path, list[Path]]:
        """(absolute path, root the files are named from, the readable files) of a file or folder."""
        if not path.exists():
            raise ConfigError(f"context: no such file or folder: {os.fspath(path)!r}")
        self.source_label = os.fspath(path)  # as the user wrote it (outputs stay the same on any machine)
        path = path.absolute()
        if path.is_file():
            if not path.name.lower().endswith(SUFFIXES):
                raise ConfigError(f"context: cannot read {path.suffix or 'suffix-less'} files "
                                  f"({os.fspath(path)!r}); readable: {' '.join(SUFFIXES)}")
            root, files = path.parent, [path]
        else:
            root, files = path, sorted(self._walk(path))
        if not files:
            raise ConfigError(f"context: no documents in {os.fspath(path)!r} (looked for {' '.join(SUFFIXES)})")
        return path, root, files

    def _entry(self, file: Path, rel: str, cached: dict) -> dict | str | None:
        """The file's passages and terms (from the cache file while size and mtime match, else read now);
        "no-pdf" when reading it needs pypdf, None when it cannot be read (a warning says why)."""
        try:
            st = file.stat()
        except OSError as exc:
            self._skip(rel, exc.strerror or type(exc).__name__)
            return None
        entry = cached.get(rel)
        if (isinstance(entry, dict) and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns and isinstance(entry.get("passages"), list)
                and isinstance(entry.get("terms"), list)):
            self.stats["reused"] += 1
            return entry
        try:
            pieces = _pieces(file, self.chunk_tokens)
        except ImportError:
            return "no-pdf"
        except (_Unreadable, OSError) as exc:
            self._skip(rel, getattr(exc, "strerror", None) or str(exc))
            return None
        self.stats["read"] += 1
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "passages": pieces,
                "terms": [textmod.words(t) for t, _ in pieces]}

    def _from_path(self, path: Path, use_cache: bool, progress) -> list[list[str]]:
        path, root, files = self._documents(path)
        memo_key = (os.fspath(path), self.chunk_tokens, self._fingerprint(root, files))
        remembered = _MEMORY.get(memo_key[:2]) if use_cache else None
        if remembered is not None and remembered[0] == memo_key[2]:  # nothing changed since the last build here
            _, self.passages, terms, self._bm25_memo = remembered
            self.passages = list(self.passages)
            self.stats.update(files=len(files), reused=len(files))
            self._memo_key = memo_key
            return terms
        cache_file = _cache_file(path, self.chunk_tokens) if use_cache else None
        cached = self._load_cache(cache_file)
        fresh: dict[str, Any] = {}
        started = time.monotonic()
        report = None
        pdf_missing = 0
        terms: list[list[str]] = []
        for n, file in enumerate(files, 1):
            rel = file.relative_to(root).as_posix()
            entry = self._entry(file, rel, cached)
            if not isinstance(entry, dict):
                pdf_missing += entry == "no-pdf"
                continue
            fresh[rel] = entry
            self.stats["files"] += 1
            for (chunk, loc), t in zip(entry["passages"], entry["terms"]):
                self.passages.append(Passage(chunk, rel, loc))
                terms.append(t)
            if report is None and progress is not False and time.monotonic() - started > PROGRESS_AFTER_S:
                report = progress or _default_progress()
            if report is not None and (n % 25 == 0 or n == len(files)):
                report(n, len(files))
        if pdf_missing:
            self.warnings.append(f"skipped {pdf_missing} PDF file(s): reading PDFs needs pypdf "
                                 "(pip install 'nb_model[pdf]')")
        if cache_file is not None and (self.stats["read"] or set(fresh) != set(cached)):
            self._save_cache(cache_file, path, fresh)
        if not self.passages:
            why = f" ({self.warnings[0]})" if self.warnings else ""
            raise ConfigError(f"context: no text found in {os.fspath(path)!r}{why}")
        if use_cache and not self.warnings:
            self._memo_key = memo_key
            _MEMORY[memo_key[:2]] = (memo_key[2], tuple(self.passages), terms, None)
        return terms

    @staticmethod
    def _fingerprint(root: Path, files: list[Path]) -> tuple:
        out = []
        for file in files:
            try:
                st = file.stat()
            except OSError:
                return ()
            out.append((file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
        return tuple(out)

    @staticmethod
    def _walk(folder: Path):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
            for name in filenames:
                if name.lower().endswith(SUFFIXES) and not name.startswith("."):
                    yield Path(dirpath) / name

    def _skip(self, rel: str, why: str) -> None:
        self.stats["skipped"] += 1
        self.warnings.append(f"skipped {rel}: {why}")

    def _load_cache(self, cache_file: Path | None) -> dict[str, Any]:
        if cache_file is None:
            return {}
        try:
            data = json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def _save_cache(self, cache_file: Path, root: Path, files: dict[str, Any]) -> None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "root": os.fspath(root), "files": files},
                                      ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, cache_file)
        except OSError as exc:  # a read-only folder: the index works, it is just not kept
            self.warnings.append(f"index not cached ({exc.strerror or exc})")

    # -- searching ------------------------------------------------------
    def _model(self):
        if self._bm25 is None:
            try:
                import bm25s
            except ImportError:
                raise ConfigError("searching documents needs bm25s: pip install 'nb_model[rag]'") from None
            model = self._bm25_memo
            if model is None:
                model = bm25s.BM25()
                model.index(self._terms, show_progress=False)
                if self._memo_key is not None and _MEMORY.get(self._memo_key[:2], (None,))[0] == self._memo_key[2]:
                    fp, passages, terms, _ = _MEMORY[self._memo_key[:2]]
                    _MEMORY[self._memo_key[:2]] = (fp, passages, terms, model)
            self._bm25 = model
        return self._bm25

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The `k` passages that best match `query` (BM25), best first; only passages sharing a term."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a whole number of passages, at least 1; got {k!r}")
        if not isinstance(query, str):
            raise ConfigError(f"the query must be text, got {type(query).__name__}")
        terms = textmod.words(query)
        if not terms:
            return []
        import numpy as np
        scores = self._model().get_scores(terms)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        out = []
        for i in sorted(top.tolist(), key=lambda i: (-float(scores[i]), i)):
            if float(scores[i]) <= 0:
                break
            p = self.passages[i]
            out.append(Passage(p.text, p.source, p.location, round(float(scores[i]), 4)))
        return out

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return (f"Index({self.source_label}: {len(self.passages)} passages from {self.stats['files']} files)"
                if self.stats["files"] else f"Index({self.source_label}: {len(self.passages)} passages)")


def as_index(context, **kw) -> Index:
    """`context` as an Index: an Index as is, else built from a path, list or pandas object."""
    return context if isinstance(context, Index) else Index(context, **kw)
