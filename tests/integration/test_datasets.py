"""extract / evaluate and %%generate --schema / --score: through the real magic, real HTTP to the sandbox
(and to minimal servers written here from the protocols' docs), real DataFrames."""
import json
import math
import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import run, settled
import nb_model
from nb_model.datasets import evaluate, extract, judge
from nb_model.datasets.evaluate import Z95
from nb_model.datasets.extract import INSTRUCTIONS
from nb_model.errors import ConfigError

pd = pytest.importorskip("pandas")
FIELDS = {"sentiment": ["pos", "neg", "neu"], "price": float, "product": str}
REVIEWS = pd.Series(["I love the kettle, great value at $34.99.",
                     "The blender broke after a week. Terrible.",
                     "The lamp is white and 40 cm tall."], index=["r1", "r2", "r3"], name="review")
EXPECTED = {"sentiment": ["pos", "neg", "neu"], "price": [34.99, None, 40.0], "product": ["kettle", "blender", "lamp"]}


def check_rows(df):
    assert list(df.index) == ["r1", "r2", "r3"]
    assert list(df.columns[:3]) == ["sentiment", "price", "product"]
    assert df["sentiment"].tolist() == EXPECTED["sentiment"]
    assert df["product"].tolist() == EXPECTED["product"]
    assert df["price"].iloc[0] == 34.99 and math.isnan(df["price"].iloc[1]) and df["price"].iloc[2] == 40.0
    assert df["_error"].isna().all()


def test_extract_schema_in_all_three_forms_keeps_the_index(sandbox, use_endpoint):
    use_endpoint(sandbox)
    check_rows(extract(REVIEWS, FIELDS, progress=False))
    json_schema = {"type": "object", "required": ["sentiment", "price", "product"],
                   "properties": {"sentiment": {"enum": ["pos", "neg", "neu"]},
                                  "price": {"type": ["number", "null"]}, "product": {"type": "string"}}}
    check_rows(extract(REVIEWS, json_schema, progress=False))
    pydantic = pytest.importorskip("pydantic")
    from typing import Literal, Optional

    class Review(pydantic.BaseModel):
        sentiment: Literal["pos", "neg", "neu"]
        price: Optional[float]
        product: str

    check_rows(extract(REVIEWS, Review, progress=False))
    assert settled(sandbox, 9)["requests"] == 9


def test_broken_json_is_repaired_or_retried_and_counted(sandbox, use_endpoint):
    use_endpoint(sandbox)
    sandbox.inject("json-noise")     # item 1: prose, a code fence and a trailing comma -> repaired
    sandbox.inject("json-invalid")   # item 2: cut in half -> asked again with the error -> valid
    df = extract(REVIEWS, FIELDS, progress=False, max_workers=1, details=True)
    check_rows(df)
    assert df["_status"].tolist() == ["repaired", "retried", "ok"]
    assert df["_calls"].tolist() == [1, 2, 1]
    assert "```json" in df["_raw"].iloc[0]
    info = df.attrs["nb_model"]
    assert (info["ok"], info["repaired"], info["retried"], info["failed"], info["calls"]) == (1, 1, 1, 0, 4)
    assert settled(sandbox, 4)["requests"] == 4


def test_items_that_still_fail_are_error_rows_not_an_exception(sandbox, use_endpoint):
    use_endpoint(sandbox)
    # requests in order: item 1, 2, 3, then the retries of 1 and 3 (item 2's refusal is not a bad answer)
    sandbox.inject("json-invalid")           # item 1: broken ...
    sandbox.inject("400")                    # item 2: the server refuses it (the batch goes on)
    sandbox.inject("json-invalid", times=2)  # item 3: broken; item 1's retry: broken again
    df = extract(REVIEWS, FIELDS, progress=False, max_workers=1, details=True)
    assert list(df.index) == ["r1", "r2", "r3"]
    assert df["_status"].tolist() == ["failed", "failed", "retried"]
    assert df.loc[["r1", "r2"], ["sentiment", "price", "product"]].isna().all().all()
    assert df.loc["r1", "_error"] and "\n" not in df.loc["r1", "_error"]
    assert "HTTP 400" in df.loc["r2", "_error"]
    assert df.loc["r3", "sentiment"] == "neu" and pd.isna(df.loc["r3", "_error"])


class Recorder(BaseHTTPRequestHandler):
    """A minimal OpenAI chat / seed server from the docs' examples: records each body, answers `ANSWER`."""

    bodies: list = []
    answer = '{"sentiment": "pos", "price": 3.5, "product": "pen"}'

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        chat = self.path.endswith("/chat/completions")
        streamed = body.get("stream") if chat else self.headers.get("X-Stream", "").lower() == "true"
        if chat and streamed:  # SSE chunks, as in the chat completions streaming docs
            events = [{"id": "x", "object": "chat.completion.chunk", "model": "m",
                       "choices": [{"index": 0, "delta": {"content": self.answer}, "finish_reason": None}]},
                      {"id": "x", "object": "chat.completion.chunk", "model": "m",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
            data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
            kind = "text/event-stream"
        elif chat:  # one chat.completion object
            data = json.dumps({"id": "x", "object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.answer},
                 "finish_reason": "stop"}]}).encode()
            kind = "application/json"
        elif streamed:  # seed: JSON lines of {"text": ...} and nothing else, as the docs show
            data = (json.dumps({"text": self.answer}) + "\n").encode()
            kind = "application/x-ndjson"
        else:  # seed, not streamed: {"output": ...} alone
            data = json.dumps({"output": self.answer}).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def recorder():
    Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_openai_gets_response_format_and_seed_gets_instructions(recorder, use_endpoint):
    use_endpoint(recorder, protocol="openai", model="m")
    df = extract(["A pen for 3.50."], FIELDS, progress=False)
    assert df.iloc[0].to_dict() == {"sentiment": "pos", "price": 3.5, "product": "pen", "_error": None}
    body = Recorder.bodies[-1]
    rf = body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["properties"]["sentiment"] == {"enum": ["pos", "neg", "neu"]}
    assert body["messages"][-1]["content"] == "A pen for 3.50."  # no instructions in the prompt
    use_endpoint(recorder, protocol="seed")
    extract(["A pen for 3.50."], FIELDS, progress=False)
    body = Recorder.bodies[-1]
    assert "response_format" not in body
    assert body["prompt"].startswith("A pen for 3.50.") and INSTRUCTIONS in body["prompt"]
    schema = json.loads(body["prompt"].split(INSTRUCTIONS)[1].split("\n")[1])
    assert schema["required"] == ["sentiment", "price", "product"]


def test_sandbox_answers_response_format_over_the_openai_wire(sandbox, use_endpoint):
    use_endpoint(sandbox, protocol="openai")
    check_rows(extract(REVIEWS, FIELDS, progress=False))
    use_endpoint(sandbox, protocol="openai-completions")  # a base model: instructions in the prompt
    check_rows(extract(REVIEWS, FIELDS, progress=False))


def test_schema_magic_for_one_cell(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    shell.user_ns.pop("thing", None)
    res, cap = run(shell, '%%generate --schema "sentiment:pos|neg|neu, price:float" -o r\n'
                          "Review: the {thing} is excellent and costs $12.")
    assert not res.success  # {thing} is not defined: one line, nothing sent
    assert "unknown variable {thing}" in cap.stderr and "Traceback" not in cap.stderr
    shell.user_ns["thing"] = "kettle"
    res, cap = run(shell, '%%generate --schema "sentiment:pos|neg|neu, price:float" -o r\n'
                          "Review: the {thing} is excellent and costs $12.")
    assert res.success, cap.stderr
    assert shell.user_ns["r"] == {"sentiment": "pos", "price": 12.0}
    assert cap.outputs[-1].data["application/json"] == {"sentiment": "pos", "price": 12.0}
    assert "valid" in cap.stdout
    res, cap = run(shell, '%%generate --schema "price=float"\nx')
    assert not res.success and "--schema: cannot read" in cap.stderr and "Traceback" not in cap.stderr
    res, cap = run(shell, '%%generate --schema "a:int" --compare "temperature=0,1"\nx')
    assert not res.success and "--over VAR --score SCORE" in cap.stderr and "Traceback" not in cap.stderr
    res, cap = run(shell, "%%generate --score exact:label\nx")
    assert not res.success and "--over VAR --compare SPEC" in cap.stderr


def labelled(n=54):
    moods = [("positive", "I love the {p}, it is excellent."), ("negative", "The {p} broke, terrible."),
             ("neutral", "The {p} is grey."), ("negative", "Great look but the {p} broke and it is poor.")]
    things = ["kettle", "lamp", "chair", "pen", "desk", "mug", "fan", "rug", "bag", "cup", "pot", "clock", "sofa",
              "tray"]
    rows = [{"review": moods[i % 4][1].format(p=things[i % len(things)]) + f" Order {i}.", "label": moods[i % 4][0]}
            for i in range(n)]
    return pd.DataFrame(rows, index=[f"o{i}" for i in range(n)])


VARIANTS = ("prompt=What do you think of this review? {review}"
            "|Is this review positive or negative? Answer with one word: positive or negative. {review}"
            "|Classify the sentiment. Answer with one word: positive, negative or neutral. {review}")


def test_evaluate_magic_over_54_rows_and_3_variants_then_a_warm_rerun_sends_nothing(shell, sandbox, use_endpoint,
                                                                                    monkeypatch, tmp_path):
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    use_endpoint(sandbox)
    shell.user_ns["reviews"] = labelled()
    cell = f'%%generate --over reviews --compare "{VARIANTS}" --score exact:label -o ev --workers 8\n{{prompt}}'
    res, cap = run(shell, cell)
    assert res.success, cap.stderr
    ev = shell.user_ns["ev"]
    s = ev.summary.set_index("variant")
    assert len(ev.rows) == 3 * 54 and s["n"].tolist() == [54, 54, 54]
    bare, two, three = s["score"].tolist()
    # the sandbox picks a listed choice by keyword: without choices nothing matches; with two, no "neutral"
    assert bare == 0 and three > two > 0
    assert three == pytest.approx(ev.rows[ev.rows.variant == ev.summary.variant[2]]["score"].mean())
    table = cap.outputs[-2].data["text/plain"]
    assert "95% interval" in table and "best: prompt=Classify" in table and "from the cache" not in table
    assert cap.outputs[-1].data["image/png"]  # the chart (matplotlib is in the test extra)
    assert settled(sandbox, 162)["requests"] == 162
    sandbox.reset()
    res, cap = run(shell, cell)
    assert res.success and shell.user_ns["ev"].rows["cached"].all()
    assert "162 of 162 calls from the cache" in cap.outputs[-2].data["text/plain"]
    assert shell.user_ns["ev"].summary["score"].tolist() == [bare, two, three]
    assert settled(sandbox, 0)["requests"] == 0


def test_function_and_judge_scorers_with_separate_judge_cost(sandbox, use_endpoint):
    use_endpoint(sandbox)
    data = labelled(54)
    variants = {"short": {"prompt": "Answer with one word: positive, negative or neutral. {review}",
                          "max_tokens": 5},
                "two": {"prompt": "Answer with one word: positive or negative. {review}"},
                "free": {"prompt": "Say something about: {review}", "temperature": 0.2}}

    def mentions_label(output, row):
        return row["label"] in output

    ev = evaluate(variants, data, score=mentions_label, progress=False, max_workers=8)
    assert ev.summary["variant"].tolist() == ["short", "two", "free"] and len(ev.rows) == 3 * 54
    expected = [data["label"].iloc[i] in ev.rows["output"].iloc[i] for i in range(54)]
    assert ev.rows["score"].iloc[:54].tolist() == [float(x) for x in expected]
    assert (ev.summary["judge_cost_usd"] == 0).all()
    grader = judge("The answer names the review's sentiment")
    ev = evaluate(variants, data, score=grader, progress=False, max_workers=8)
    assert ev.rows["score"].between(0, 1).all() and ev.rows["score"].notna().all()
    assert (ev.summary["judge_cost_usd"] > 0).all() and grader.cost_usd == pytest.approx(
        ev.summary["judge_cost_usd"].sum())
    assert "judge cost included" in ev.table()


def test_summary_statistics_match_a_hand_computation(sandbox, use_endpoint):
    use_endpoint(sandbox)
    data = [{"text": "alpha", "want": 1.0}, {"text": "beta", "want": 0.0}, {"text": "gamma", "want": 1.0},
            {"text": "delta", "want": 1.0}, {"text": "epsilon", "want": 0.5}]
    ev = evaluate(["Write about {text}."], data, score=lambda out, row: row["want"], progress=False)
    row = ev.summary.iloc[0]
    # by hand: mean (1 + 0 + 1 + 1 + 0.5) / 5 = 0.7; deviations .3 -.7 .3 .3 -.2 -> squares .09 .49 .09 .09 .04
    # = 0.8; s = sqrt(0.8 / 4) = 0.4472136; half-width 1.959964 * 0.4472136 / sqrt(5) = 0.3919928
    assert row["n"] == 5 and row["score"] == pytest.approx(0.7)
    assert row["ci_low"] == pytest.approx(0.7 - 0.3919928, abs=1e-6)
    assert row["ci_high"] == pytest.approx(0.7 + 0.3919928, abs=1e-6)
    lat = sorted(ev.rows["latency_s"])
    assert row["p50_latency_s"] == pytest.approx(lat[2])               # the middle of 5
    assert row["p95_latency_s"] == pytest.approx(lat[3] + 0.8 * (lat[4] - lat[3]))  # rank 0.95 * 4 = 3.8
    assert row["tokens"] == (ev.rows["tokens_in"] + ev.rows["tokens_out"]).sum()
    assert row["cost_usd"] == pytest.approx(row["tokens"] * 12.0 / 1e6)  # the seed price, $12 per 1M
    assert statistics.mean([1, 0, 1, 1, 0.5]) == 0.7 and Z95 == pytest.approx(1.959964, abs=1e-6)


def test_bad_inputs_are_one_line(sandbox, use_endpoint):
    use_endpoint(sandbox)
    with pytest.raises(ConfigError, match="type 'date'"):
        extract(["x"], {"when": "date"}, progress=False)
    with pytest.raises(ConfigError, match="unknown score"):
        evaluate(["{item}"], ["a"], score="exactly:label", progress=False)
    with pytest.raises(ConfigError, match="no column 'label'"):
        evaluate(["{item}"], [{"item": "a"}], score="exact:label", progress=False)
    with pytest.raises(ConfigError, match="no column 'answer'"):
        evaluate("temperature=0,1", [{"item": "a"}], template="{item}", score="contains:answer", progress=False)
    assert settled(sandbox, 0)["requests"] == 0  # said before anything is sent
    with pytest.raises(ConfigError, match="not texts"):
        extract([{"a": 1}], FIELDS, progress=False)
    assert nb_model.extract is extract and nb_model.evaluate is evaluate


def test_warm_extraction_replays_both_rounds_from_the_cache(sandbox, use_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    use_endpoint(sandbox)
    sandbox.inject("json-noise")
    sandbox.inject("json-invalid")
    cold = extract(REVIEWS, FIELDS, progress=False, max_workers=1, details=True)
    assert settled(sandbox, 4)["requests"] == 4
    sandbox.reset()
    warm = extract(REVIEWS, FIELDS, progress=False, max_workers=1, details=True)
    assert settled(sandbox, 0)["requests"] == 0
    assert warm["_status"].tolist() == cold["_status"].tolist() == ["repaired", "retried", "ok"]
    assert warm.attrs["nb_model"]["cached"] == 4
    check_rows(warm)


def test_builtin_scorers_on_known_outputs():
    from nb_model.datasets.scorers import parse_score
    row = {"label": "Positive", "n": 3}
    outs = ["positive.", "It is positive!", '```json\n{"a": 1}\n```', '{"a": "x"}', "no"]

    def scores(spec, **kw):
        return parse_score(spec, **kw).score_all(outs, [row] * len(outs), {})

    assert scores("exact:label") == [1, 0, 0, 0, 0]
    assert scores("contains:label") == [1, 1, 0, 0, 0]
    assert scores(r"regex:\bpositive\b") == [1, 1, 0, 0, 0]
    assert scores("json_valid") == [0, 0, 1, 1, 0]
    assert scores("schema_valid", schema={"a": int}) == [0, 0, 1, 0, 0]
    from nb_model.tokens import estimate_tokens
    assert scores("length") == [estimate_tokens(o) for o in outs]
    most = estimate_tokens(outs[0])
    assert scores(f"length:{most}") == [float(estimate_tokens(o) <= most) for o in outs]
    assert scores(f"length:{most}")[0] == 1.0 and scores(f"length:{most - 1}")[0] == 0.0
    assert scores(lambda out, row: len(out) > row["n"]) == [1, 1, 1, 1, 0]
    with pytest.raises(ConfigError, match="does not compile"):
        parse_score("regex:(")


# -- packing, the in-flight window, the interval, a light %load_ext ---------------------------------------
def test_extract_packs_rows_and_each_row_is_cached_on_its_own(sandbox, use_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("NB_MODEL_CACHE", str(tmp_path / "cache.sqlite"))
    use_endpoint(sandbox)
    check_rows(extract(REVIEWS, FIELDS, progress=False, pack=3))
    assert settled(sandbox, 1)["requests"] == 1  # three rows, one request
    sandbox.reset()
    warm = extract(REVIEWS, FIELDS, progress=False)  # unpacked: every row from the cache
    assert settled(sandbox, 0)["requests"] == 0 and warm.attrs["nb_model"]["cached"] == 3
    check_rows(warm)


def test_response_format_does_not_pack(sandbox, use_endpoint):
    use_endpoint(sandbox, protocol="openai")
    with pytest.raises(ConfigError, match="pack=3 needs the schema in the prompt"):
        extract(REVIEWS, FIELDS, progress=False, pack=3, cache="off")
    assert settled(sandbox, 0)["requests"] == 0
    check_rows(extract(REVIEWS, FIELDS, progress=False, pack="auto", cache="off"))  # one row per request
    assert settled(sandbox, 3)["requests"] == 3
    sandbox.reset()
    check_rows(extract(REVIEWS, FIELDS, progress=False, pack=3, structured="prompt", cache="off"))
    assert settled(sandbox, 1)["requests"] == 1


def test_schema_magic_over_rows_with_pack(shell, sandbox, use_endpoint):
    use_endpoint(sandbox)
    shell.user_ns["reviews"] = REVIEWS
    res, cap = run(shell, '%%generate --over reviews --schema "sentiment:pos|neg|neu, price:float, product:str" '
                          '--pack 3 --no-cache -o df\n{item}')
    assert res.success, cap.stderr
    check_rows(shell.user_ns["df"])
    assert settled(sandbox, 1)["requests"] == 1
    res, cap = run(shell, '%%generate --schema "a:int" --pack 3\nx')
    assert not res.success and "--pack packs the rows of --over VAR" in cap.stderr


def test_evaluate_packs_the_variants_and_the_judge(sandbox, use_endpoint):
    use_endpoint(sandbox)
    data = labelled(10)
    variant = "Classify the sentiment. Answer with one word: positive, negative or neutral. {review}"
    grader = judge("The answer names the review's sentiment")
    plain = evaluate([variant], data, score=grader, cache="off", progress=False)
    assert settled(sandbox, 20)["requests"] == 20  # 10 answers, 10 grades
    sandbox.reset()
    packed = evaluate([variant], data, score=judge("The answer names the review's sentiment"), cache="off",
                      progress=False, pack=5)
    assert settled(sandbox, 4)["requests"] == 4  # 2 packs of answers, 2 packs of grades
    assert packed.rows["output"].tolist() == plain.rows["output"].tolist()
    assert packed.rows["score"].tolist() == plain.rows["score"].tolist()
    assert packed.summary["tokens"].iloc[0] == packed.rows[["tokens_in", "tokens_out"]].to_numpy().sum()


def test_extract_and_evaluate_keep_as_many_requests_in_flight_as_the_rate_allows(use_endpoint):
    from nb_model.batch import last_run
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=20, token_rate=25) as server:  # a JSON answer of ~20 pieces: ~0.8 s
        use_endpoint(server)
        texts = [f"The lamp number {i} is fine." for i in range(16)]
        df = extract(texts, {"product": str}, cache="off", progress=False)
        assert df["_error"].isna().all() and last_run["peak_in_flight"] > 8, last_run  # 4 workers: 4
        evaluate(["Name the product: {item}"], texts, score="contains:item", cache="off", progress=False)
        assert last_run["peak_in_flight"] > 8, last_run


def test_proportions_get_wilsons_interval_and_bounded_scores_are_clipped(sandbox, use_endpoint):
    use_endpoint(sandbox)
    data = [{"text": t, "ok": ok} for t, ok in zip(["alpha", "beta", "gamma", "delta", "epsilon"],
                                                     [True, True, True, True, False])]
    ev = evaluate(["Write about {text}."], data, score=lambda out, row: row["ok"], progress=False)
    row = ev.summary.iloc[0]
    # by hand, Wilson with p = 4/5, n = 5, z = 1.959964: z²/n = 0.768292; centre (0.8 + 0.384146) / 1.768292
    # = 0.669655; root sqrt(0.8 · 0.2 / 5 + 3.841459 / 100) = sqrt(0.0704146) = 0.265357; half-width
    # 1.959964 / 1.768292 · 0.265357 = 0.294122 -> 0.375533 .. 0.963777
    assert row["score"] == pytest.approx(0.8)
    assert row["ci_low"] == pytest.approx(0.375533, abs=1e-5) and row["ci_high"] == pytest.approx(0.963777, abs=1e-5)
    everyone = evaluate(["Write about {text}."], data, score=lambda out, row: True, progress=False).summary.iloc[0]
    # 5 of 5: centre 1.384146 / 1.768292 = 0.782758, half 1.108393 · sqrt(0.0384146) = 0.217241 -> 0.565517 .. 1
    assert everyone["ci_low"] == pytest.approx(0.565517, abs=1e-5) and everyone["ci_high"] == 1.0
    from nb_model.datasets.evaluate import summarize
    mean, low, high = summarize([0.75, 1.0, 1.0], (0.0, 1.0))  # a judge's grades: within 0..1
    assert mean == pytest.approx(2.75 / 3) and high == 1.0 and low < mean
    assert summarize([0.75, 1.0, 1.0])[2] > 1.0  # a function's scores have no known range: not clipped
    assert judge("r").bounds == (0.0, 1.0)  # a judge's grades are scaled to 0..1


def test_loading_the_extension_imports_no_dataset_library():
    import subprocess
    import sys
    code = ("import sys; from IPython.core.interactiveshell import InteractiveShell; "
            "InteractiveShell.instance().run_line_magic('load_ext', 'nb_model'); "
            "print(sorted(m for m in ('pandas', 'jsonschema', 'json_repair', 'matplotlib', 'nb_model.datasets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr)


def test_a_judge_behind_response_format_grades_one_row_per_request_when_the_variants_pack(use_endpoint):
    from nb_model.sandbox import SandboxServer
    with SandboxServer(port=0, qps=0) as server:
        use_endpoint(server, protocol="openai")
        data = labelled(6)
        grader = judge("The answer names the review's sentiment")
        ev = evaluate(["Answer with one word: positive, negative or neutral. {review}"], data, score=grader,
                      cache="off", progress=False, pack=3)
        assert ev.rows["score"].notna().all() and grader.tokens > 0
        assert settled(server, 8)["requests"] == 2 + 6  # the answers in 2 packs, the grades one by one
