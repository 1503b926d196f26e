"""Grounded answers: `%%generate --context`, `nb_model.Index`, `generate(context=)` through the real magic
and real HTTP (the sandbox, and a minimal server written here from the API docs' examples)."""
from __future__ import annotations

import json
import os
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import requests_seen, run, shown

DATA = Path(__file__).resolve().parent.parent / "data" / "rag"
QUESTIONS = json.loads((DATA / "questions.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _forget_variables():
    """The IPython shell is shared by the whole run: take this module's variables out of it afterwards."""
    yield
    from IPython.core.interactiveshell import InteractiveShell
    if InteractiveShell.initialized():
        for name in ("notes", "notes_s", "notes_df", "idx", "number", "mixed"):
            InteractiveShell.instance().user_ns.pop(name, None)


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    shutil.copytree(DATA, folder, ignore=shutil.ignore_patterns("questions.json"))
    return folder


def citations(cap) -> dict:
    """The citations display of a cell (its MIME bundle)."""
    found = [o.data for o in cap.outputs if "passage" in o.data.get("text/plain", "").split("\n")[0]]
    assert len(found) == 1, shown(cap)
    return found[0]


def check_citations(gen) -> list[int]:
    """Every [n] of the answer names a passage that was sent, and its quote is in that passage."""
    numbers = [int(n) for n in re.findall(r"\[(\d+)\]", gen.text)]
    assert numbers, gen.text
    for n in numbers:
        assert 1 <= n <= len(gen.passages), (n, gen.text)
    for n, quote in re.findall(r'\[(\d+)\]: "(.*?)"', gen.text) + re.findall(r"\[(\d+)\]：“(.*?)”", gen.text):
        assert quote in " ".join(gen.passages[int(n) - 1].text.split()) or quote in gen.passages[int(n) - 1].text
    return numbers


@pytest.mark.parametrize("protocol", ["seed", "openai", "openai-completions"])
def test_magic_answers_with_citations_that_map_to_shown_passages(shell, sandbox, use_endpoint, docs, protocol):
    use_endpoint(sandbox, protocol=protocol)
    res, cap = run(shell, f"%%generate --context {docs} --k 3 -o g\n"
                          "How much written notice is needed to terminate the lease?")
    assert res.success, cap.stderr
    g = shell.user_ns["g"]
    assert g.text in cap.stdout and "sixty days of written notice" in g.text
    numbers = check_citations(g)
    bundle = citations(cap)
    for n in numbers:  # each cited passage is shown, with its source and its text
        p = g.passages[n - 1]
        assert f"[{n}] {p.where}" in bundle["text/plain"]
        assert f"[{n}] {p.where}" in bundle["text/html"] and "<details>" in bundle["text/html"]
        assert p.text.splitlines()[-1].strip() in bundle["text/plain"]
    assert g.passages[numbers[0] - 1].source == "en/lease.md"
    assert requests_seen(sandbox, 1) == 1


def test_chinese_question_gets_chinese_passages_and_answer(shell, sandbox, use_endpoint, docs):
    use_endpoint(sandbox)
    res, cap = run(shell, f"%%generate --context {docs} -o g\n押金什么时候退还？")
    assert res.success, cap.stderr
    g = shell.user_ns["g"]
    assert "根据" in g.text and "三十日内退还" in g.text
    assert g.passages[check_citations(g)[0] - 1].source == "zh/租赁合同.md"


def test_no_relevant_passage_says_so(shell, sandbox, use_endpoint, docs):
    use_endpoint(sandbox)
    res, cap = run(shell, f"%%generate --context {docs} -o g\nWho painted the famous portrait in Florence?")
    assert res.success
    assert "do not contain the answer" in shell.user_ns["g"].text
    res, cap = run(shell, f"%%generate --context {docs} -o g\nWhat is the price of a season ticket for the ferry?")
    g = shell.user_ns["g"]  # a passage about tickets is sent, but it shares too few of the question's words
    assert g.passages and "do not contain the answer" in g.text
    assert citations(cap)["text/plain"].startswith("passages sent (none cited):\n[1] ")
    res, cap = run(shell, f"%%generate --context {docs} -o g\nZebra quantum xylophone?")
    assert "do not contain the answer" in shell.user_ns["g"].text
    assert "no passage of the context matches" in citations(cap)["text/plain"]
    res, cap = run(shell, f"%%generate --context {docs} -o g\n火车票多少钱？")
    assert shell.user_ns["g"].text == "[sandbox] 这些段落中没有这个问题的答案。"


def test_index_cache_reused_and_changed_file_reindexed(shell, sandbox, use_endpoint, docs, tmp_path, monkeypatch):
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "nbcache" / "cache.sqlite"))
    from nb_model import Index
    first = Index(docs)
    assert first.stats["read"] == 7 and first.stats["reused"] == 0
    assert list((tmp_path / "nbcache" / "index").glob("*.json"))
    same_kernel = Index(docs)  # unchanged files: the passages and BM25 model of the last build, no file read
    assert same_kernel.stats["read"] == 0 and same_kernel.stats["reused"] == 7
    from nb_model.retrieval import index
    index._MEMORY.clear()  # as in a new kernel: the on-disk index cache
    again = Index(docs)
    assert again.stats["read"] == 0 and again.stats["reused"] == 7
    assert [p.text for p in again.passages] == [p.text for p in first.passages]

    use_endpoint(sandbox)
    cell = f"%%generate --context {docs} -o g\nHow much written notice is needed to terminate the lease?"
    run(shell, cell)
    res, cap = run(shell, cell)
    assert shell.user_ns["g"].cached and requests_seen(sandbox, 1) == 1  # same passages: the answer is cached
    lease = docs / "en" / "lease.md"
    size = lease.stat().st_size
    lease.write_text(lease.read_text().replace("sixty days", "fifty days"), encoding="utf-8")  # same size
    os.utime(lease, ns=(lease.stat().st_atime_ns, lease.stat().st_mtime_ns + 10**9))
    assert lease.stat().st_size == size
    changed = Index(docs)
    assert changed.stats["read"] == 1 and changed.stats["reused"] == 6
    res, cap = run(shell, cell)
    g = shell.user_ns["g"]
    assert not g.cached and "fifty days of written notice" in g.text  # the cache key holds the passages
    assert requests_seen(sandbox, 2) == 2
    stamp = lease.stat().st_mtime_ns  # a new size with the old modification time is read again too
    lease.write_text(lease.read_text().replace("fifty days", "ninety days"), encoding="utf-8")
    os.utime(lease, ns=(stamp, stamp))
    resized = Index(docs)
    assert resized.stats["read"] == 1 and any("ninety days" in p.text for p in resized.passages)


def test_variables_as_context_and_python_api(shell, sandbox, use_endpoint):
    import pandas as pd
    use_endpoint(sandbox)
    notes = ["The boiler is serviced every October by Nordheat.", "Parking permits are renewed in January.",
             "The roof was repaired after the storm of 2021."]
    shell.user_ns.update(notes=notes, notes_s=pd.Series(notes, index=[10, 11, 12]),
                         notes_df=pd.DataFrame({"topic": ["boiler", "parking", "roof"], "note": notes}))
    for var, source in (("notes", "item 0"), ("notes_s", "row 10"), ("notes_df", "row 0")):
        res, cap = run(shell, f"%%generate --context {var} -o g\nWhen is the boiler serviced?")
        assert res.success, cap.stderr
        g = shell.user_ns["g"]
        assert g.passages[check_citations(g)[0] - 1].source == source and "October" in g.text
    import nb_model
    idx = nb_model.Index(notes)
    hits = idx.search("parking permits renewed", k=2)
    assert hits[0].text == notes[1] and all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    shell.user_ns["idx"] = idx
    res, cap = run(shell, "%%generate --context idx --k 1 -o g\nWhen are parking permits renewed?")
    assert len(shell.user_ns["g"].passages) == 1
    gen = nb_model.generate("When was the roof repaired?", context=idx, k=2)
    assert "2021" in gen.text and check_citations(gen)


@pytest.mark.parametrize("cell, expect", [
    ("%%generate --context no/such/folder\nq?", "no such file or folder: 'no/such/folder'"),
    ("%%generate --context missing_var_9f2\nq?", "--context missing_var_9f2: no variable and no file or folder"),
    ("%%generate --context empty-dir\nq?", "no documents in"),
    ("%%generate --context docs --k 0\nq?", "--k must be at least 1"),
    ("%%generate --context report.docx\nq?", "context: cannot read .docx files"),
    ("%%generate --k 3\nq?", "--k needs --context"),
    ("%%generate --context number\nq?", "context must be a path, a list of strings, a pandas Series or DataFrame"),
    ("%%generate --context mixed\nq?", "got a list holding a int"),
    ("%%generate --context docs --compare 'temperature=0,1'\nq?", "--context cannot be combined with --compare"),
])
def test_bad_input_is_one_line(shell, sandbox, use_endpoint, docs, tmp_path, cell, expect):
    use_endpoint(sandbox)
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "report.docx").write_bytes(b"PK")
    shell.user_ns.update(number=42, mixed=["text", 3])
    res, cap = run(shell, cell)
    assert not res.success
    text = cap.stdout + cap.stderr
    assert expect in text and "Traceback" not in text, text
    assert len([ln for ln in text.splitlines() if ln.strip()]) == 1, text
    assert sandbox.stats()["requests"] == 0
    assert run(shell, "1 + 1")[0].result == 2


def test_unreadable_file_one_warning_rest_indexed(shell, sandbox, use_endpoint, docs):
    use_endpoint(sandbox)
    (docs / "broken.ipynb").write_text("{not json", encoding="utf-8")
    (docs / "binary.txt").write_bytes(b"\xff\xfe\xff\x00\x81" * 10)
    res, cap = run(shell, f"%%generate --context {docs} -o g\nWhen is the security deposit returned?")
    assert res.success
    warnings = [t for t in shown(cap) if t.startswith("nb_model: skipped")]
    assert len(warnings) == 2 and any("broken.ipynb" in w for w in warnings), shown(cap)
    assert all("\n" not in w for w in warnings)
    assert "returned within thirty days" in shell.user_ns["g"].text


def test_readers_notebook_csv_python_pdf(tmp_path):
    import nbformat
    from nb_model import Index
    folder = tmp_path / "mixed"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("The pipeline retries flaky uploads."),
                                         nbformat.v4.new_code_cell("upload_retries = 5  # flaky network")])
    nbformat.write(nb, folder / "analysis.ipynb")
    (folder / "people.csv").write_text("name,city\nAda,London\nGrace,Arlington\n", encoding="utf-8")
    (folder / "tool.py").write_text('def checksum(path):\n    """Compute a sha256 checksum."""\n', encoding="utf-8")
    (folder / "report.pdf").write_bytes(_pdf("Quarterly revenue grew by eleven percent."))
    idx = Index(folder)
    assert idx.stats["files"] == 4 and not idx.warnings
    assert idx.search("flaky uploads")[0].where == "analysis.ipynb, cell 1"
    assert idx.search("upload_retries network")[0].where == "analysis.ipynb, cell 2"
    assert idx.search("Grace")[0].where == "people.csv, row 3" and "city: Arlington" in idx.search("Grace")[0].text
    assert idx.search("checksum")[0].source == "tool.py"
    assert idx.search("revenue")[0].where == "report.pdf, page 1"


def _pdf(text: str) -> bytes:
    """A one-page PDF showing `text` (written by hand: pypdf reads PDFs but does not typeset text)."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for n, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return out


def test_chunks_follow_paragraphs_and_budget():
    from nb_model.retrieval.text import chunks
    from nb_model.tokens import estimate_tokens
    text = "# Title\n\nShort paragraph one.\n\n" + " ".join(f"Sentence number {i} is here." for i in range(200))
    text += "\n\n" + "长" * 900
    out = chunks(text, budget=60)
    assert out[0][0].startswith("# Title\n\nShort paragraph one.")  # a heading joins the next paragraph
    assert all(estimate_tokens(t) <= 60 for t, _, _ in out)
    assert all(t.rstrip().endswith(".") for t, _, _ in out[1:-16])  # cut at sentence ends
    assert "".join(t for t, _, _ in out if t.startswith("长")) == "长" * 900



def test_chunk_line_ranges_are_the_lines_the_text_is_on():
    """Every passage's (first, last) line range holds exactly its text, for paragraphs and for sentences
    of a long paragraph that spans lines (the citations show these ranges)."""
    from nb_model.retrieval.text import chunks
    long_para = "\n".join(f"Line {i} says the notice period is {i} days for clause {i}." for i in range(1, 13))
    text = ("The lease ends after sixty days of written notice.\n\nRent is due monthly.\n\n"
            + long_para + "\n\n\n租金每月支付。押金在三十日内退还。\n")
    lines = text.split("\n")
    out = chunks(text, budget=40)
    assert len(out) >= 4
    for chunk, first, last in out:
        span = "\n".join(lines[first - 1:last])
        assert lines[first - 1].strip() and lines[last - 1].strip(), (chunk, first, last)  # no blank ends
        assert " ".join(chunk.split()) in " ".join(span.split()), (chunk, first, last, span)
    assert out[-1][1:] == (len(lines) - 1, len(lines) - 1)


# -- the prompt on the wire: a minimal server written from the API docs' examples --------------------------

class Recorder:
    def __init__(self, protocol: str):
        self.protocol, self.bodies = protocol, []


@pytest.fixture
def minimal_server():
    """seed: POST /v1/generate {prompt, max_tokens, …} -> {"output": …}; openai: POST /v1/chat/completions
    {messages, …} -> {"choices": [{"message": {"content": …}, "finish_reason": "stop"}]}."""
    servers = []

    def start(protocol: str) -> tuple[Recorder, str]:
        rec = Recorder(protocol)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                rec.bodies.append(body)
                reply = "Per [1], the notice period is sixty days [1]."
                if protocol == "seed":
                    data = {"output": reply}
                else:
                    data = {"id": "x", "object": "chat.completion", "model": "m",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                         "finish_reason": "stop"}]}
                raw = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        path = "/v1/generate" if protocol == "seed" else "/v1"
        return rec, f"http://127.0.0.1:{httpd.server_address[1]}{path}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("protocol", ["seed", "openai"])
def test_prompt_on_the_wire_both_protocols(shell, minimal_server, monkeypatch, docs, protocol):
    rec, url = minimal_server(protocol)
    monkeypatch.setenv("NB_MODEL_ENDPOINT", url)
    monkeypatch.setenv("NB_MODEL_PROTOCOL", protocol)
    res, cap = run(shell, f"%%generate --context {docs} --k 2 --no-stream -s 'Be brief.' -o g\n"
                          "How much written notice is needed to terminate the lease?")
    assert res.success, cap.stderr
    body = rec.bodies[-1]
    sent = body["prompt"] if protocol == "seed" else body["messages"][-1]["content"]
    if protocol == "openai":
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    else:
        assert sent.startswith("System: Be brief.\nUser: ")
    g = shell.user_ns["g"]
    assert "Cite the passages you use by their numbers" in sent and "say so" in sent
    for n, p in enumerate(g.passages, 1):
        assert f"[{n}] ({p.where})\n{p.text}" in sent
    assert len(g.passages) == 2 and sent.rstrip().endswith(
        "Question: How much written notice is needed to terminate the lease?\nAnswer:" + ("" if protocol == "openai" else "\nAssistant:"))
    assert "[1] " + g.passages[0].where in citations(cap)["text/plain"]


def test_context_budget_with_16k_profile_and_huge_folder(shell, minimal_server, monkeypatch, tmp_path):
    from nb_model.tokens import estimate_tokens
    rec, url = minimal_server("seed")
    monkeypatch.setenv("NB_MODEL_ENDPOINT", url)
    huge = tmp_path / "huge"
    huge.mkdir()
    for n in range(300):  # ~300 files, every paragraph about the question: far more than 16K tokens
        paras = [f"Report {n}-{i}: the termination notice for contract {n} clause {i} is {i + 30} days, "
                 f"given in writing to the other party before the lease ends." for i in range(12)]
        (huge / f"contract{n:03d}.txt").write_text("\n\n".join(paras), encoding="utf-8")
    res, cap = run(shell, f"%%generate --context {huge} --k 2000 --max-tokens 2048 --no-stream -o g\n"
                          "What is the termination notice in the lease?")
    assert res.success, cap.stderr + cap.stdout
    sent = rec.bodies[-1]["prompt"]
    g = shell.user_ns["g"]
    assert estimate_tokens(sent) + 2048 <= 16384
    assert estimate_tokens(sent) + 2048 > 16384 - 200  # filled, not starved
    assert 100 < len(g.passages) < 2000 and f"[{len(g.passages)}] (" in sent and f"[{len(g.passages) + 1}] (" not in sent


def test_load_ext_imports_no_retrieval_or_tool_code():
    import subprocess
    import sys
    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "InteractiveShell.instance().run_line_magic('load_ext', 'nb_model')\n"
            "print(sorted(m for m in ('bm25s', 'numpy', 'jieba', 'pypdf', 'pydantic', 'nb_model.retrieval',\n"
            "                      'nb_model.tools') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_progress_line_past_the_threshold(shell, sandbox, use_endpoint, docs, monkeypatch):
    from nb_model.retrieval import index
    use_endpoint(sandbox)
    monkeypatch.setattr(index, "PROGRESS_AFTER_S", 0.0)  # every build is "slow": the line shows
    res, cap = run(shell, f"%%generate --context {docs}\nWhen is the security deposit returned?")
    assert res.success and "nb_model: indexing 7/7 files — done" in cap.stderr
    monkeypatch.setattr(index, "PROGRESS_AFTER_S", 60.0)
    res, cap = run(shell, f"%%generate --context {docs}\nWhen is the security deposit returned?")
    assert "indexing" not in cap.stderr


def test_without_bm25s_one_line(shell, sandbox, use_endpoint, docs, monkeypatch):
    import sys
    use_endpoint(sandbox)
    monkeypatch.setitem(sys.modules, "bm25s", None)  # as if not installed: import fails
    res, cap = run(shell, f"%%generate --context {docs}\nWhen is the security deposit returned?")
    assert not res.success and "pip install 'nb_model[rag]'" in cap.stderr
    assert len(cap.stderr.strip().splitlines()) == 1 and sandbox.stats()["requests"] == 0


def test_damaged_index_cache_is_rebuilt(docs, tmp_path, monkeypatch):
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "nbcache" / "cache.sqlite"))
    from nb_model import Index
    from nb_model.retrieval import index
    Index(docs)
    (cache_file,) = (tmp_path / "nbcache" / "index").glob("*.json")
    for damage in ('{"version": 1, "files": {"en/lease.md": 5, "en/bakery.md": {"size": "x"}}}', "{not json", "[]"):
        cache_file.write_text(damage, encoding="utf-8")
        index._MEMORY.clear()
        idx = Index(docs)
        assert idx.stats["files"] == 7 and idx.stats["read"] >= 2 and not idx.warnings
        assert idx.search("security deposit")[0].source == "en/lease.md"


@pytest.mark.parametrize("protocol", ["seed", "openai"])
def test_context_budget_counts_earlier_chat_turns(shell, minimal_server, monkeypatch, tmp_path, protocol):
    """With --chat the earlier turns go out with the grounded prompt: the passages give them room."""
    from nb_model.tokens import estimate_tokens
    rec, url = minimal_server(protocol)
    monkeypatch.setenv("NB_MODEL_ENDPOINT", url)
    monkeypatch.setenv("NB_MODEL_PROTOCOL", protocol)
    huge = tmp_path / "huge"
    huge.mkdir()
    for n in range(300):
        paras = [f"Report {n}-{i}: the termination notice for contract {n} clause {i} is {i + 30} days, "
                 f"given in writing to the other party before the lease ends." for i in range(12)]
        (huge / f"contract{n:03d}.txt").write_text("\n\n".join(paras), encoding="utf-8")
    from nb_model.chat import conversations
    conversations(shell).pop("rag", None)
    earlier = "Some background on our leases. " * 700  # ~4-5K tokens of conversation before the question
    res, cap = run(shell, f"%%generate --chat rag --no-stream --no-cache\n{earlier}")
    assert res.success, cap.stderr
    res, cap = run(shell, f"%%generate --context {huge} --chat rag --k 2000 --max-tokens 2048 --no-stream -o g\n"
                          "What is the termination notice in the lease?")
    assert res.success, cap.stderr + cap.stdout
    body = rec.bodies[-1]
    sent = body["prompt"] if protocol == "seed" else "\n".join(m["content"] for m in body["messages"])
    assert earlier.strip() in sent  # the earlier turn went out too
    assert estimate_tokens(sent) + 2048 <= 16384
    assert estimate_tokens(sent) + 2048 > 16384 - 300  # filled, not starved
    conversations(shell).pop("rag", None)
