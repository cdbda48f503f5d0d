"""The HTTP service on a project after `kedro run`: endpoints, bad inputs, the API key, then the real uvicorn server on
127.0.0.1 (the demo, with /reviewers): a bounded load test, the page in Chromium, schemathesis with every check.
Faults, overload, shutdown and reload: test_faults.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import load_test_module

PARAMS = {"recommend": {"num_candidates": 12, "llm_batch_size": 4, "ranker": "fusion"},  # the LLM re-ranker
          "serving": {"demo": True}}
SEED = 20261201  # schemathesis' seed: none the rest of the suite uses
pytestmark = pytest.mark.slow


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
    r = client.get("/ready")
    ready = r.json()
    assert ready["ready"] is True and ready["state"] == "ready" and ready["ranker"] == "fusion"
    assert ready["num_candidates"] == 12 and ready["fallback"] == "fusion_no_llm"
    assert ready["adapter_version"]  # the versioned adapter the catalogue resolves, by its version only
    assert "/" not in r.text.replace("/s", "")  # no path of the server's disk
    history = [p["asin"] for p in reviewer["history"]]
    assert reviewer["next"]["asin"] not in history and reviewer["next"]["title"]
    word = reviewer["history"][0]["title"].split()[0]
    hits = client.get("/products", params={"q": word, "limit": 5}).json()
    assert 0 < len(hits) <= 5 and all(word.casefold() in h["title"].casefold() for h in hits)
    r = client.post("/recommendations", json={"history": history, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["ranker"] == "fusion" and body["degraded"] is False
    reasons = [i["reason"] for i in body["items"]]
    assert all(re.fullmatch(r"often bought with “.+” \(\d+ co-purchases?\)|similar to “.+”|popular \(\d+ purchases?\)"
                            r"|a new product in the catalogue", x) for x in reasons), reasons
    default_k = client.post("/recommendations", json={"history": history}).json()
    assert len(default_k["items"]) == 10  # no k: recommend.k (conf/base) of the service
    assert r.headers["x-request-id"]
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
    ("unknown ASIN", {"history": ["B000NOSUCH"]}, 404, "history.0: unknown product"),
    ("empty history", {"history": []}, 422, "history: List should have at least 1 item"),
    ("a blank entry", {"history": ["   "]}, 404, "history.0: unknown product"),
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


def test_the_openapi_schema_is_true_for_the_running_service(client):
    schema = client.get("/openapi.json").json()
    assert {"/recommendations", "/products", "/reviewers", "/health", "/ready"} <= set(schema["paths"])
    assert "securitySchemes" not in schema.get("components", {})  # no key here: the schema declares none
    assert "/admin/reload" not in schema["paths"]  # only behind a key
    example = schema["components"]["schemas"]["RecommendationRequest"]["examples"][0]
    assert client.post("/recommendations", json=example).status_code == 200  # drawn from the served catalogue
    assert client.get("/docs").status_code == 200


def test_unknown_query_parameters_are_refused_naming_them(client):
    for path in ("/ready", "/reviewers", "/products?q=a"):
        r = client.get(path, params={"debug": "1"})
        assert r.status_code == 422 and r.json()["detail"].startswith("debug: unknown query parameter"), (path, r.text)
    assert client.get("/products", params={"q": "a", "limit": 2}).status_code == 200


def test_reviewers_are_served_only_by_the_demo(ran_project, monkeypatch):
    from fastapi.testclient import TestClient

    from amazon_llm_rec.serving.__main__ import build_app

    monkeypatch.chdir(ran_project)
    monkeypatch.delenv("AMAZON_LLM_REC_API_KEY", raising=False)
    app, settings = build_app(ran_project, None, {"recommend": {"ranker": "fusion_no_llm"}})
    assert settings.demo is False  # conf/base
    with TestClient(app) as c:
        _wait(c)
        assert c.get("/reviewers").status_code == 404
        schema = c.get("/openapi.json").json()
        assert "/reviewers" not in schema["paths"]
        example = schema["components"]["schemas"]["RecommendationRequest"]["examples"][0]["history"]
        service = app.state.serving["service"]
        assert example == service.recommender.retriever.by_popularity[:2]  # no customer's history in public docs


def test_an_api_key_guards_every_endpoint_but_health_and_is_compared_in_constant_time(ran_project, monkeypatch,
                                                                                      reviewer):
    import hmac

    from fastapi.testclient import TestClient

    from amazon_llm_rec.serving import app as app_module
    from amazon_llm_rec.serving.__main__ import build_app

    compared, real = [], hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    monkeypatch.chdir(ran_project)
    monkeypatch.setenv("AMAZON_LLM_REC_API_KEY", "s3cret")
    app, settings = build_app(ran_project, None, {**PARAMS, "recommend": {**PARAMS["recommend"], "ranker": "fusion_no_llm"}})
    assert settings.api_key == "s3cret" and "s3cret" not in repr(settings)
    body = {"history": [p["asin"] for p in reviewer["history"]]}
    key = {"X-API-Key": "s3cret"}
    with TestClient(app) as c:
        _wait(c, key)
        assert c.get("/health").status_code == 200
        assert c.get("/docs").status_code == 200  # the docs hold no data (the example is two popular products)
        for path in ("/ready", "/products?q=a", "/reviewers", "/metrics"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"X-API-Key": "s3cre"}).status_code == 401, path  # a prefix is not the key
            assert c.get(path, headers=key).status_code == 200, path
        r = c.post("/recommendations", json=body, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert c.post("/recommendations", json=body, headers=key).status_code == 200
        assert (b"s3cre", b"s3cret") in compared  # every check went through hmac.compare_digest
        schema = c.get("/openapi.json").json()
        assert "X-API-Key" in json.dumps(schema["components"]["securitySchemes"])
        assert "/admin/reload" in schema["paths"]


def test_without_a_key_the_service_refuses_a_non_loopback_address_unless_insecure(ran_project, caplog):
    import subprocess

    from amazon_llm_rec.serving.__main__ import check_exposure

    assert check_exposure("127.0.0.1", False, False) is None and check_exposure("::1", False, False) is None
    assert check_exposure("localhost", False, False) is None and check_exposure("0.0.0.0", True, False) is None
    assert "without an API key" in check_exposure("0.0.0.0", False, False)
    assert "without an API key" in check_exposure("192.168.1.5", False, False)
    with caplog.at_level("WARNING"):
        assert check_exposure("0.0.0.0", False, True) is None
    assert "WITHOUT an API key (--insecure)" in caplog.text
    env = {k: v for k, v in __import__("os").environ.items() if k != "AMAZON_LLM_REC_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "amazon_llm_rec.serving", "--project", str(ran_project), "--host",
                           "0.0.0.0", "--port", "1"], cwd=ran_project, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 2 and "refusing to serve on 0.0.0.0 without an API key" in done.stderr


def test_the_api_key_may_come_from_conf_local_but_never_from_parameters():
    from amazon_llm_rec.core.errors import ConfigError
    from amazon_llm_rec.serving.config import ServingSettings
    from tests.conftest import serving_settings

    base = serving_settings().model_dump()
    assert ServingSettings.from_params(base, {"serving_api_key": "k1"}, environ={}).api_key == "k1"
    assert ServingSettings.from_params(base, {"serving_api_key": "k1"}, environ={"AMAZON_LLM_REC_API_KEY": "k2"}).api_key == "k2"
    assert ServingSettings.from_params(base, {}, environ={}).api_key is None
    with pytest.raises(ConfigError, match="serving.api_key must not be a parameter"):
        ServingSettings.from_params({**base, "api_key": "oops"}, {}, environ={})
    with pytest.raises(ConfigError, match="serving.limits.max_k: Input should be greater than or equal to 1"):
        ServingSettings.from_params({**base, "limits": {**base["limits"], "max_k": 0}}, {}, environ={})
    with pytest.raises(ConfigError, match="serving.max_queu: Extra inputs are not permitted"):
        ServingSettings.from_params({**base, "max_queu": 3}, {}, environ={})
    with pytest.raises(ConfigError, match="serving.demo: Input should be a valid boolean"):
        ServingSettings.from_params({**base, "demo": "yes"}, {}, environ={})
    with pytest.raises(ConfigError, match="serving.demo shows test reviewers' real next products: it needs fit_on"):
        ServingSettings.from_params({**base, "demo": True, "fit_on": "all"}, {}, environ={})
    with pytest.raises(ConfigError, match="serving.deadline_ms: Field required"):
        ServingSettings.from_params({k: v for k, v in base.items() if k != "deadline_ms"}, {}, environ={})


# The real server: uvicorn on 127.0.0.1, a bounded load test, the page in Debian's Chromium.

@pytest.fixture(scope="module")
def server(ran_project, tmp_path_factory):
    lt = load_test_module()
    port = lt.free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = lt.start_server(ran_project, None, ["recommend.num_candidates=12", "recommend.llm_batch_size=4",
                                               "recommend.ranker=fusion", "serving.demo=true"], port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        lt.wait_ready(url, proc, timeout=300)
        yield url
    finally:
        lt.stop_server(proc)
    assert "Uvicorn running on http://127.0.0.1" in log.read_text()


def test_a_bounded_load_on_the_real_server_has_no_failures(server):
    lt = load_test_module()
    payloads = lt.payloads_from(server, 8, k=5)
    for clients, total in ((1, 4), (8, 16)):
        row = lt.run_load(server, clients, total, payloads, timeout=120)
        assert row["failed"] == 0 and row["ok"] + row["rejected_429"] == total, row
        assert row["p50_ms"] <= row["p99_ms"]
    import httpx

    ready = httpx.get(server + "/ready").json()
    assert ready["requests"] == 20 and ready["largest_batch"] > 1  # concurrent requests shared forward passes
    metrics = httpx.get(server + "/metrics").text
    assert 'http_request_duration_seconds_count{method="POST",route="/recommendations",status="200"} 20.0' in metrics
    assert "recommender_batch_size_count" in metrics and "model_load_seconds" in metrics
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
            assert page.locator("#results tbody td.why").first.inner_text().strip()  # each product says why
            assert page.locator("#apikey").get_attribute("type") == "password"
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


def schemathesis_run(url: str, *extra: str) -> subprocess.CompletedProcess:
    """`st run` with every check, 40 examples per operation and the suite's own seed."""
    return subprocess.run([str(Path(sys.executable).with_name("st")), "run", url + "/openapi.json", "-c", "all", "-n", "40",
                           "--seed", str(SEED), "--request-timeout", "120", *extra],
                          capture_output=True, text=True, timeout=900, check=False)


def test_schemathesis_with_every_check_passes_on_the_demo(server):
    import httpx

    done = schemathesis_run(server)
    assert done.returncode == 0, done.stdout[-6000:]
    assert httpx.get(server + "/health").json() == {"status": "ok"}
