"""The service under faults, on a real uvicorn on 127.0.0.1 in this process: a model made slow (the deadline sends
requests to the fallback ranker), one that raises (degraded answers), one request that fails (it alone), one that
fails to load (/health fails), a bounded overload (only 200 or 429), adapter reload, shutdown under load; and what
the page shows: variants collapsed, the catalogue's titles, a reason per product."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import load_test_module, serving_settings

pytestmark = pytest.mark.slow
PARAMS = {"recommend": {"num_candidates": 12, "llm_batch_size": 4, "ranker": "fusion"}}


@pytest.fixture(scope="module")
def data(ran_project):
    from amazon_llm_rec.serving.config import load_project

    mp = pytest.MonkeyPatch()
    mp.chdir(ran_project)
    try:
        yield load_project(ran_project, None, PARAMS)
    finally:
        mp.undo()


@contextmanager
def serve(build, api_key: str | None = None, **settings):
    """create_app(settings, build) on a real uvicorn in a thread, on a free port of 127.0.0.1; yields (url, app)."""
    import uvicorn

    from amazon_llm_rec.serving.app import create_app

    load_test = load_test_module()
    app = create_app(serving_settings(**settings).model_copy(update={"api_key": api_key}), build)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=load_test.free_port(), log_config=None,
                                           access_log=False, timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        yield url, app
    finally:
        server.should_exit = True
        thread.join(30)


def wait(url: str, headers=None, timeout: float = 120) -> httpx.Response:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = httpx.get(url + "/ready", headers=headers)
        if r.status_code == 200 or r.json().get("state") == "failed":
            return r
        time.sleep(0.1)
    raise TimeoutError(url)


def history_of(service, i: int) -> list[str]:
    return list(service.recommender.retriever.by_popularity[i: i + 3])


def test_a_slow_llm_sends_requests_past_their_deadline_to_the_fallback_at_once_and_recovers(data):
    from amazon_llm_rec.serving.service import RecommenderService

    service = None

    def build():
        nonlocal service
        service = RecommenderService(data, serving_settings())
        real = service.recommender.llm.score
        service.recommender.llm.score = lambda *a, **k: (time.sleep(0.6), real(*a, **k))[1]
        return service

    with serve(build, deadline_ms=400, micro_batch={"max_batch": 1, "max_wait_ms": 0}) as (url, _):
        wait(url)
        service.per_request_s = None  # forget the self-check's measurement: the first request goes to the LLM
        body = {"history": history_of(service, 0), "k": 5}
        first = httpx.post(url + "/recommendations", json=body, timeout=60).json()
        assert first["degraded"] is False and first["ranker"] == "fusion" and first["took_ms"] >= 600
        second = httpx.post(url + "/recommendations", json=body, timeout=60).json()
        assert second["degraded"] is True and second["degraded_reason"].startswith("deadline")
        assert second["ranker"] == "fusion_no_llm" and len(second["items"]) == 5 and second["took_ms"] < 400
        # four at once: none waits behind the slow model, all are answered within the deadline
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: httpx.post(url + "/recommendations", json=body, timeout=60).json(),
                                    range(4)))
        assert all(a["degraded"] and a["took_ms"] < 400 for a in answers), answers
        # each degraded answer lowers the estimate a little: the LLM is tried again and re-measured (and still slow)
        service.per_request_s = 0.45  # a known estimate just above the deadline: the decay lets one through soon
        tried = [httpx.post(url + "/recommendations", json=body, timeout=60).json()["degraded"] for _ in range(40)]
        assert tried.count(False) >= 1 and tried.count(True) >= 30, tried
        metrics = httpx.get(url + "/metrics").text
        assert f'recommendations_degraded_total{{reason="deadline"}} {1 + 4 + tried.count(True)}.0' in metrics


def test_an_llm_that_raises_gives_degraded_answers_and_one_failing_request_fails_alone(data):
    from amazon_llm_rec.serving.service import RecommenderService

    service = RecommenderService(data, serving_settings())
    real_answer = service._answer

    def poisoned(recommender, queries):
        if any("POISON" in q.history for q in queries):
            raise RuntimeError("this request breaks every ranker")
        return real_answer(recommender, queries)

    with serve(lambda: service, deadline_ms=None, micro_batch={"max_batch": 8, "max_wait_ms": 300}) as (url, _):
        wait(url)
        service.titles["POISON"] = service.display["POISON"] = "a product that breaks the ranker"
        service.recommender.retriever.titles["POISON"] = "a product that breaks the ranker"
        service._answer = poisoned
        ok = [{"history": history_of(service, i), "k": 4} for i in range(3)]
        with ThreadPoolExecutor(4) as pool:  # one batch (300 ms window): three good requests and the poisoned one
            futures = [pool.submit(httpx.post, url + "/recommendations", json=b, timeout=60)
                       for b in [*ok[:2], {"history": ["POISON"], "k": 4}, ok[2]]]
            answers = [f.result() for f in futures]
        assert [r.status_code for r in answers] == [200, 200, 500, 200], [r.text for r in answers]
        assert "internal error (request" in answers[2].json()["detail"] and answers[2].headers["x-request-id"]
        assert all(r.json()["degraded"] is False for r in (answers[0], answers[1], answers[3]))
        assert httpx.get(url + "/ready").json()["largest_batch"] >= 3  # they did share a batch

        service._answer = real_answer
        service.recommender.llm.score = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("CUDA error: device lost"))
        r = httpx.post(url + "/recommendations", json=ok[0], timeout=60)
        assert r.status_code == 200 and r.json()["degraded"] is True, r.text
        assert r.json()["degraded_reason"] == "llm_error: the LLM re-rank raised RuntimeError"
        assert r.json()["ranker"] == "fusion_no_llm" and len(r.json()["items"]) == 4


def test_a_model_that_fails_to_load_fails_health_and_ready_tells_no_secrets(caplog):
    def build():
        raise OSError("cannot open /secret/path/adapter_model.safetensors")

    with caplog.at_level("ERROR"), serve(build) as (url, _):
        r = wait(url)
        assert r.status_code == 503 and r.json() == {"ready": False, "state": "failed", "reloading": False}
        assert httpx.get(url + "/health").status_code == 503
        assert httpx.get(url + "/health").json() == {"status": "failed"}
        assert httpx.post(url + "/recommendations", json={"history": ["x"]}).status_code == 503
    assert "/secret/path" in caplog.text  # the cause is in the log, not in the answer


def test_a_bounded_overload_answers_only_200_or_429_and_every_200_is_right(data):
    from amazon_llm_rec.serving.service import RecommenderService

    service = RecommenderService(data, serving_settings())
    real = service.recommender.llm.score
    histories = [history_of(service, i) for i in range(8)]
    expected = {tuple(h): [i["asin"] for i in service._answer(service.recommender, [_query(h)])[0]] for h in histories}
    service.recommender.llm.score = lambda *a, **k: (time.sleep(0.15), real(*a, **k))[1]
    with serve(lambda: service, max_queue=8, deadline_ms=None, micro_batch={"max_batch": 4, "max_wait_ms": 0}) as (url, _):
        wait(url)
        barrier = threading.Barrier(64)

        def client(i: int) -> httpx.Response:
            barrier.wait()
            return httpx.post(url + "/recommendations", json={"history": histories[i % 8], "k": 5}, timeout=120)

        with ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(client, range(64)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 429}, [r.text for r in answers if r.status_code not in (200, 429)]
        assert codes.count(429) > 0 and codes.count(200) >= 8, codes
        for i, r in enumerate(answers):
            if r.status_code == 200:
                assert [x["asin"] for x in r.json()["items"]] == expected[tuple(histories[i % 8])]
            else:
                assert int(r.headers["retry-after"]) >= 1 and "serving.max_queue" in r.json()["detail"]
        assert f"recommendations_rejected_total {codes.count(429)}.0" in httpx.get(url + "/metrics").text


def _query(history):
    from amazon_llm_rec.serving.service import Query

    return Query(history, 5, True, None)


def test_reload_swaps_the_adapter_only_after_the_new_model_passed_its_check(data):
    from amazon_llm_rec.serving.service import RecommenderService

    loads = []

    def build():
        loads.append(time.monotonic())
        service = RecommenderService(data, serving_settings())
        if len(loads) == 2:  # the second load is slow: the old model serves meanwhile
            time.sleep(2)
            service.info["adapter_version"] = "v2"
        if len(loads) == 3:  # the third loads a broken model: its self-check fails, the old one stays
            service.recommender.llm.score = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken weights"))
        return service

    key = {"X-API-Key": "k"}
    with serve(build, api_key="k") as (url, app):
        wait(url, key)
        first = app.state.serving["service"]
        body = {"history": history_of(first, 0), "k": 3}
        with ThreadPoolExecutor(1) as pool:
            reload = pool.submit(httpx.post, url + "/admin/reload", headers=key, timeout=120)
            time.sleep(0.5)
            during = httpx.post(url + "/recommendations", json=body, headers=key, timeout=60)
            assert during.status_code == 200 and during.json()["degraded"] is False
            assert httpx.get(url + "/ready", headers=key).json()["reloading"] is True
            assert app.state.serving["service"] is first  # the old model serves until the new one is checked
            assert reload.result().status_code == 200, reload.result().text
        assert reload.result().json()["adapter_version"] == "v2"
        assert httpx.get(url + "/ready", headers=key).json()["adapter_version"] == "v2"
        broken = httpx.post(url + "/admin/reload", headers=key, timeout=120)
        assert broken.status_code == 500 and "previous one still serves" in broken.json()["detail"]
        assert httpx.get(url + "/ready", headers=key).json()["adapter_version"] == "v2"
        again = httpx.post(url + "/recommendations", json=body, headers=key, timeout=60)
        assert again.status_code == 200 and again.json()["degraded"] is False
        assert httpx.post(url + "/admin/reload").status_code == 401 and len(loads) == 3


def test_sigterm_under_load_lets_requests_in_flight_finish_and_no_request_hangs(ran_project, tmp_path):
    lt = load_test_module()
    port = lt.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = lt.start_server(ran_project, None, ["recommend.num_candidates=12", "recommend.ranker=fusion",
                                               "serving.demo=true", "serving.deadline_ms=null"], port,
                           tmp_path / "server.log")
    try:
        lt.wait_ready(url, proc, timeout=300)
        payloads = lt.payloads_from(url, 8, k=5)

        signalled = []

        def client(i: int) -> tuple[str, float, float]:
            start = time.monotonic()
            try:
                r = httpx.post(url + "/recommendations", json=payloads[i % len(payloads)], timeout=60)
                return str(r.status_code), start, time.monotonic()
            except httpx.TransportError as exc:  # refused once the socket closed: the caller knows at once
                return type(exc).__name__, start, time.monotonic()

        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(client, i) for i in range(48)]
            time.sleep(0.5)
            signalled.append(time.monotonic())
            proc.send_signal(signal.SIGTERM)
            outcomes = [f.result(timeout=90) for f in futures]  # none hangs
        later = [client(0)[0] for _ in range(3)]
        # uvicorn re-raises the signal once it has shut down gracefully: the exit status is -SIGTERM
        assert proc.wait(60) in (0, -signal.SIGTERM) and time.monotonic() - signalled[0] < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    codes = [o for o, _, _ in outcomes]
    # requests the server was answering at the signal finished with their answer (new ones got 503 or were refused)
    assert any(o == "200" and end > signalled[0] for o, _, end in outcomes), outcomes
    # a connection accepted but not yet read when uvicorn shuts down is closed: the caller sees it at once
    assert set(codes) <= {"200", "503", "ConnectError", "RemoteProtocolError", "ReadError"}, codes
    assert set(later) == {"ConnectError"}, later
    log = (tmp_path / "server.log").read_text()
    assert "Waiting for application shutdown" in log and "Application shutdown complete" in log, log[-3000:]


def test_variants_collapse_titles_are_the_catalogues_and_each_item_has_a_reason(data):
    """Two ASINs with one cleaned title show once (the better ranked); titles are the original ones; reasons come
    from the evidence."""
    import dataclasses

    import pandas as pd

    from amazon_llm_rec.serving.service import Query, RecommenderService

    items = data.items
    popular = RecommenderService(data, serving_settings()).recommender.retriever.by_popularity
    a, b, c = popular[3], popular[4], popular[5]
    row = items[items["asin"] == a].iloc[0]
    variant = pd.DataFrame([{**row.to_dict(), "asin": "B0VARIANT1", "raw_title": row["raw_title"] + " (Pack of 2)"}])
    changed = dataclasses.replace(data, items=pd.concat([items, variant], ignore_index=True))
    history = popular[:3]
    answers = {}
    for collapse in (True, False):
        service = RecommenderService(changed, serving_settings(collapse_variants=collapse))
        answers[collapse] = service.run_batch([Query(history, 10, True, [a, "B0VARIANT1", b, c])])[0].items
    assert len(answers[False]) == 4 and len(answers[True]) == 3
    kept = [i["asin"] for i in answers[True]]
    assert len({a, "B0VARIANT1"} & set(kept)) == 1 and {b, c} <= set(kept)
    best = next(i["asin"] for i in answers[False] if i["asin"] in (a, "B0VARIANT1"))
    assert best in kept  # the better ranked of the two stays
    raw = dict(zip(changed.items["asin"], changed.items["raw_title"], strict=True))
    assert all(i["title"] == raw[i["asin"]] for i in answers[True])
    for item in answers[True]:
        n = max(service.recommender.retriever.cooc.get(h, {}).get(item["asin"], 0) for h in history)
        if n:
            assert item["reason"].startswith("often bought with “")
            assert item["reason"].endswith(f"({n} co-purchase{'s' * (n != 1)})")
        else:
            assert item["reason"].startswith(("similar to “", "popular (", "a new product"))


def test_schemathesis_with_every_check_passes_on_a_keyed_service(data):
    """With a key: the schema declares it, every operation refuses a call without it (ignored_auth), and with it
    every check passes; /admin/reload is fuzzed too (its build hands back a loaded service at once)."""
    from amazon_llm_rec.serving.service import RecommenderService

    from .test_service import schemathesis_run

    service = RecommenderService(data, serving_settings())
    with serve(lambda: service, api_key="fuzz-key") as (url, _):
        wait(url, {"X-API-Key": "fuzz-key"})
        done = schemathesis_run(url, "-H", "X-API-Key: fuzz-key")
        assert done.returncode == 0, done.stdout[-6000:]
        assert "Selected: 5/5" in done.stdout  # /admin/reload among them (no /reviewers: not the demo)


def test_the_service_reads_the_title_vectors_the_evaluation_stored_and_encodes_none(data):
    """Parity of serving and evaluation: the service's evidence takes the `title_embeddings` the evaluation's
    `embed_titles` node stored (the same object both read through the catalog), encodes no title at start-up, and its
    vectors equal a fresh encoding of the same cleaned titles."""
    import numpy as np

    from amazon_llm_rec.core.rank.evidence import Evidence
    from amazon_llm_rec.serving.service import RecommenderService

    service = RecommenderService(data, serving_settings())
    evidence = service.recommender.evidence
    assert data.title_embeddings is not None and evidence.embeddings is data.title_embeddings
    assert data.title_embeddings.asins == list(data.items["asin"]) and not evidence._known
    sample = evidence.catalogue[:25]
    fresh = Evidence([], data.items, data.params["evaluation"]["embedding_model"])
    np.testing.assert_allclose(evidence.vectors(sample), fresh.vectors(sample), atol=1e-5)
    assert not evidence._known  # read from the store, not encoded
