"""The API documentation's own client code, run unchanged (as a script in its own process) against
`nb-model serve`: a basic call, a stream with only `{"prompt"}` in the body read with
`iter_lines(decode_unicode=True)` + `json.loads`, and a `ThreadPoolExecutor(max_workers=4)` loop."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-docs-" + "d" * 24

DOCS_CLIENT = '''
import json
import os
from concurrent.futures import ThreadPoolExecutor

import requests

API_URL = os.environ["API_URL"] + "/v1/generate"
HEADERS = {"Authorization": f"Bearer {os.environ['MODEL_API_KEY']}"}

# 基本调用
resp = requests.post(API_URL, headers=HEADERS, json={
    "prompt": "请用三句话介绍一下灯塔", "max_tokens": 200, "temperature": 0.7, "top_p": 0.9, "language": "zh"})
print("BASIC", resp.json()["output"])

# 流式输出
with requests.post(API_URL, headers={**HEADERS, "X-Stream": "true"},
                   json={"prompt": "请介绍一下潮汐"}, stream=True) as resp:
    print("STREAM ", end="")
    for line in resp.iter_lines(decode_unicode=True):
        if line:
            print(json.loads(line)["text"], end="", flush=True)
            print(type(line).__name__, end="\\x00", file=__import__("sys").stderr)
    print()

# 并发请求
def ask(prompt):
    r = requests.post(API_URL, headers=HEADERS, json={"prompt": prompt, "max_tokens": 64, "language": "zh"})
    return r.json()["output"]

prompts = ["灯塔", "冰川", "潮水", "火山", "指南针", "图书馆"]
with ThreadPoolExecutor(max_workers=4) as pool:
    for prompt, output in zip(prompts, pool.map(ask, prompts)):
        print("POOL", prompt, output)
'''


@pytest.fixture(params=["full", "minimal"])
def served(request):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NB_TEST_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "nb_model.cli", "serve", "--port", "0", "--api-key-env",
                             "NB_TEST_KEY", "--wire", request.param], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", proc.stdout.readline()).group(1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


def whole(url, body):
    return requests.post(url + "/v1/generate", json=body, headers={"Authorization": f"Bearer {KEY}"},
                         timeout=10).json()["output"]


def test_docs_client_code_prints_the_answers(served, tmp_path):
    script = tmp_path / "docs_client.py"
    script.write_text(DOCS_CLIENT, encoding="utf-8")
    env = {**os.environ, "API_URL": served, "MODEL_API_KEY": KEY, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-500:]
    out = done.stdout.decode("utf-8")
    basic = whole(served, {"prompt": "请用三句话介绍一下灯塔", "max_tokens": 200, "temperature": 0.7,
                           "top_p": 0.9, "language": "zh"})
    assert "。" in basic and re.search(r"[\u4e00-\u9fff]{4}", basic)
    # the stream, decoded by requests from the declared charset, is the whole answer without mojibake
    streamed = whole(served, {"prompt": "请介绍一下潮汐"})
    pool = ["灯塔", "冰川", "潮水", "火山", "指南针", "图书馆"]
    pooled = [whole(served, {"prompt": p, "max_tokens": 64, "language": "zh"}) for p in pool]
    assert all(re.search(r"[\u4e00-\u9fff]{4}", o) for o in pooled)
    assert out == (f"BASIC {basic}\nSTREAM {streamed}\n"
                   + "".join(f"POOL {p} {o}\n" for p, o in zip(pool, pooled)))
    assert set(done.stderr.decode().split("\x00")) - {""} == {"str"}  # str lines, never bytes


def test_minimal_wire_sends_only_the_documented_fields(tmp_path):
    from nb_model.sandbox import start_sandbox
    server = start_sandbox(qps=0, wire="minimal")
    try:
        r = requests.post(server.url + "/v1/generate", json={"prompt": "介绍灯塔", "language": "zh"}, timeout=10)
        assert list(r.json()) == ["output"]
        assert set(r.headers) <= {"Content-Type", "Content-Length", "Server", "Date"}
        r = requests.post(server.url + "/v1/generate", json={"prompt": "介绍灯塔"}, headers={"X-Stream": "true"},
                          stream=True, timeout=10)
        lines = [json.loads(line) for line in r.iter_lines(decode_unicode=True) if line]
        assert all(list(obj) == ["text"] for obj in lines) and len(lines) > 5
        assert set(r.headers) <= {"Content-Type", "Transfer-Encoding", "Server", "Date"}
        assert r.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    finally:
        server.stop()
