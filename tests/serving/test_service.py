"""The HTTP service on a project after `kedro run`: endpoints, bad inputs, the API key, fuzzing from the OpenAPI
schema (in process), then the real uvicorn server on 127.0.0.1: a bounded load test and the page in Chromium."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"recommend": {"num_candidates": 12, "llm_batch_size": 4, "ranker": "fusion"}}  # the LLM re-ranker
pytestmark = pytest.mark.slow


def _load_test():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import load_test
    finally:
        sys.path.pop(0)
    return load_test


def _wait(client, headers=None):
    for _ in range(600):
        r = client.get("/ready", headers=headers)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503, r.text
        time.sleep(0.2)
    raise TimeoutError("the service did not load")


@pytest.fixture(scope="module")
def client(ran_project):
    from fastapi.testclient import TestClient

    from amazon_llm_rec.serving.__main__ import build_app

    mp = pytest.MonkeyPatch()
    mp.chdir(ran_project)
    mp.delenv("AMAZON_LLM_REC_API_KEY", raising=False)
    app, _ = build_app(ran_project, None, PARAMS)
    with TestClient(app) as c:
        _wait(c)
        yield c
    mp.undo()


@pytest.fixture(scope="module")
def reviewer(client):
    return client.get("/reviewers", params={"limit": 3}).json()[0]


def test_health_ready_search_and_recommendations(client, reviewer):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["ranker"] == "fusion" and ready["num_candidates"] == 12
    assert ready["adapter"].endswith("lora_adapter")  # the versioned adapter the catalogue resolves
    history = [p["asin"] for p in reviewer["history"]]
    assert reviewer["next"]["asin"] not in history and reviewer["next"]["title"]
    word = reviewer["history"][0]["title"].split()[0]
    hits = client.get("/products", params={"q": word, "limit": 5}).json()
    assert 0 < len(hits) <= 5 and all(word.casefold() in h["title"].casefold() for h in hits)
    r = client.post("/recommendations", json={"history": history, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["ranker"] == "fusion"
    assert not {i["asin"] for i in body["items"]} & set(history)  # bought products are left out
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(1 <= i["retriever_rank"] <= 12 for i in body["items"])
    # titles work as well as ASINs, and the same history gives the same answer
    by_title = client.post("/recommendations", json={"history": [p["title"] for p in reviewer["history"]], "k": 5})
    assert [i["asin"] for i in by_title.json()["items"]] == [i["asin"] for i in body["items"]]
    # caller-given candidates are re-ranked, bought ones dropped unless asked
    cands = [i["asin"] for i in body["items"][:3]] + history[:1]
    given = client.post("/recommendations", json={"history": history, "candidates": cands, "k": 10}).json()
    assert sorted(i["asin"] for i in given["items"]) == sorted(cands[:3]) and given["items"][0]["source"] == "request"
    kept = client.post("/recommendations", json={"history": history, "candidates": cands, "exclude_bought": False}).json()
    assert len(kept["items"]) == 4


BAD = [
    ("unknown ASIN", {"history": ["B000NOSUCH"]}, 422, "history.0: unknown product"),
    ("empty history", {"history": []}, 422, "history: List should have at least 1 item"),
    ("10,000-item history", {"history": ["B000NOSUCH"] * 10_000}, 413, "body: request body over"),
    ("51-item history", {"history": ["x"] * 51}, 422, "history: List should have at most 50 items"),
    ("k=0", {"history": ["x"], "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ("k=10,000", {"history": ["x"], "k": 10_000}, 422, "k: Input should be less than or equal to 100"),
    ("k as a string", {"history": ["x"], "k": "5"}, 422, "k: Input should be a valid integer"),
    ("history as a string", {"history": "B000NOSUCH"}, 422, "history: Input should be a valid list"),
    ("a number in the history", {"history": [123]}, 422, "history.0: Input should be a valid string"),
    ("exclude_bought as text", {"history": ["x"], "exclude_bought": "yes"}, 422, "exclude_bought: Input should be a valid boolean"),
    ("a model path", {"history": ["x"], "model": "/etc/passwd"}, 422, "model: Extra inputs are not permitted"),
    ("an adapter", {"history": ["x"], "adapter": "data/06_models"}, 422, "adapter: Extra inputs are not permitted"),
    ("empty candidates", {"history": ["x"], "candidates": []}, 422, "candidates: List should have at least 1 item"),
    ("invalid JSON", b'{"history": [', 422, "body: invalid JSON"),
    ("non-UTF-8 bytes", b'{"history": ["\xff\xfe"]}', 400, "body: could not be read as JSON text"),
    ("not an object", b"[1, 2]", 422, "body: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("name", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_input_gets_a_4xx_naming_the_field_and_the_service_still_answers(client, reviewer, name, body,
                                                                                 status, message):
    if isinstance(body, bytes):
        r = client.post("/recommendations", content=body, headers={"content-type": "application/json"})
    else:
        r = client.post("/recommendations", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"], r.json()
    good = client.post("/recommendations", json={"history": [p["asin"] for p in reviewer["history"]], "k": 3})
    assert good.status_code == 200 and len(good.json()["items"]) == 3


def test_search_bounds(client):
    assert client.get("/products", params={"q": ""}).status_code == 422
    assert client.get("/products", params={"q": "x" * 201}).status_code == 422
    assert "limit" in client.get("/products", params={"q": "a", "limit": 51}).json()["detail"]
    assert client.get("/products", params={"q": "zzzqqqxxx"}).json() == []


def test_the_openapi_docs_list_every_endpoint(client):
    schema = client.get("/openapi.json").json()
    assert {"/recommendations", "/products", "/reviewers", "/health", "/ready"} <= set(schema["paths"])
    assert "X-API-Key" in json.dumps(schema["components"]["securitySchemes"])
    assert client.get("/docs").status_code == 200


def test_an_api_key_guards_every_endpoint_but_health(ran_project, monkeypatch, reviewer):
    from fastapi.testclient import TestClient

    from amazon_llm_rec.serving.__main__ import build_app

    monkeypatch.chdir(ran_project)
    monkeypatch.setenv("AMAZON_LLM_REC_API_KEY", "s3cret")
    app, settings = build_app(ran_project, None, {**PARAMS, "recommend": {**PARAMS["recommend"], "ranker": "fusion_no_llm"}})
    assert settings.api_key == "s3cret"
    body = {"history": [p["asin"] for p in reviewer["history"]]}
    with TestClient(app) as c:
        _wait(c, {"X-API-Key": "s3cret"})
        assert c.get("/health").status_code == 200
        assert c.get("/ready").status_code == 401
        assert c.get("/products", params={"q": "a"}).status_code == 401
        assert c.get("/reviewers").status_code == 401
        r = c.post("/recommendations", json=body, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert c.post("/recommendations", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_the_api_key_may_come_from_conf_local_but_never_from_parameters():
    from amazon_llm_rec.core.errors import ConfigError
    from amazon_llm_rec.serving.config import ServingSettings

    assert ServingSettings.from_params({}, {"serving_api_key": "k1"}, environ={}).api_key == "k1"
    assert ServingSettings.from_params({}, {"serving_api_key": "k1"}, environ={"AMAZON_LLM_REC_API_KEY": "k2"}).api_key == "k2"
    assert ServingSettings.from_params({}, {}, environ={}).api_key is None
    with pytest.raises(ConfigError, match="serving.api_key must not be a parameter"):
        ServingSettings.from_params({"api_key": "oops"}, {}, environ={})
    with pytest.raises(ConfigError, match="serving.limits.max_k must be a positive integer"):
        ServingSettings.from_params({"limits": {"max_k": 0}}, {}, environ={})


# The real server: uvicorn on 127.0.0.1, a bounded load test, the page in Debian's Chromium.

@pytest.fixture(scope="module")
def server(ran_project, tmp_path_factory):
    lt = _load_test()
    port = lt.free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = lt.start_server(ran_project, None, ["recommend.num_candidates=12", "recommend.llm_batch_size=4"], port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        lt.wait_ready(url, proc, timeout=300)
        yield url
    finally:
        lt.stop_server(proc)
    assert "Uvicorn running on http://127.0.0.1" in log.read_text()


def test_a_bounded_load_on_the_real_server_has_no_failures(server):
    lt = _load_test()
    payloads = lt.payloads_from(server, 8, k=5)
    for clients, total in ((1, 4), (8, 16)):
        row = lt.run_load(server, clients, total, payloads, timeout=120)
        assert row["failed"] == 0, row["failures"]
        assert row["requests"] == total and row["p50_ms"] <= row["p99_ms"]
    import httpx

    ready = httpx.get(server + "/ready").json()
    assert ready["requests"] == 20 and ready["largest_batch"] > 1  # concurrent requests shared forward passes
    bad = httpx.post(server + "/recommendations", content=b'{"history": ["\xff"]}',
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and httpx.get(server + "/health").status_code == 200


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian's chromium is not installed (make setup installs it: apt-get install chromium)")
    return path


def test_the_page_recommends_and_shows_errors_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(server + "/")
            assert "amazon-llm-rec" in page.title()
            page.wait_for_function("document.querySelectorAll('#reviewer option').length > 1", timeout=30_000)
            page.select_option("#reviewer", index=1)
            assert page.locator("#history li").count() >= 4
            assert "Really bought next" in page.locator("#next").inner_text()
            page.click("#recommend")
            page.wait_for_selector("#results tbody tr", timeout=60_000)
            assert page.locator("#results tbody tr").count() == 10
            assert "fusion" in page.locator("#meta").inner_text()
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            # autocomplete from the catalogue, then a bad input shows its message
            page.fill("#product", page.locator("#history li").first.inner_text().split()[0])
            page.wait_for_function("document.querySelectorAll('#suggestions option').length > 0", timeout=10_000)
            page.click("#clear")
            page.fill("#product", "no such product at all")
            page.click("#add")
            page.click("#recommend")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
            assert "history.0: unknown product" in page.locator("#error").inner_text()
            page.fill("#k", "0")
            page.click("#clear")
            page.click("#recommend")
            page.wait_for_function("document.getElementById('error').textContent.includes('history')", timeout=30_000)
        finally:
            browser.close()


def test_fuzzing_the_real_server_from_its_openapi_schema_gives_no_server_error(server):
    import httpx
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(server + "/openapi.json")
    failures, calls = [], []
    def fuzz(op):
        @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case):
            response = case.call(timeout=120)
            calls.append(op.label)
            if response.status_code >= 500:
                failures.append((op.label, response.status_code, response.text[:300]))

        check()

    for result in schema.get_all_operations():
        fuzz(result.ok())
    assert not failures, failures
    assert {"POST /recommendations", "GET /products", "GET /ready"} <= set(calls)
    assert httpx.get(server + "/health").json() == {"status": "ok"}
