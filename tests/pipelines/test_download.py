"""`kedro run --pipeline=download` and `core.download.fetch` against a real HTTP server on 127.0.0.1 that serves a
file, drops the connection mid-transfer, answers 404 and 500, stalls, and serves a corrupt file."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from amazon_llm_rec.core.data.download import DownloadConfig, DownloadError, fetch
from amazon_llm_rec.core.errors import ConfigError

PAYLOAD = gzip.compress(("\n".join(json.dumps({"reviewerID": f"U{i}", "asin": f"P{i % 50}", "unixReviewTime": i})
                                   for i in range(20_000)) + "\n").encode(), mtime=0)


class Server:
    """Routes: /ok/<f> (Range honoured), /drop/<f> (first response cut in the middle), /404/<f>, /500/<f> (always),
    /flaky/<f> (500 twice, then fine), /stall/<f> (first response stalls mid-body), /norange/<f> (ignores Range),
    /corrupt/<f> (right size, not gzip). `hits` counts requests per route, `ranges` records Range headers."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.ranges: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                route = self.path.strip("/").split("/")[0]
                outer.hits[route] = outer.hits.get(route, 0) + 1
                n = outer.hits[route]
                if route == "404":
                    return self.send_error(404, "Not Found")
                if route == "500" or (route == "flaky" and n <= 2):
                    return self.send_error(500, "Internal Server Error")
                body = PAYLOAD if route != "corrupt" else b"\x1f\x8b" + b"x" * (len(PAYLOAD) - 2)
                start = 0
                rng = self.headers.get("Range")
                if rng and route != "norange":
                    outer.ranges.append(rng)
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return None
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                rest = body[start:]
                if route in {"drop", "stall"} and n == 1:
                    self.wfile.write(rest[: len(rest) // 2])
                    self.wfile.flush()
                    if route == "stall":
                        time.sleep(3)  # longer than the client's timeout
                    self.close_connection = True
                    return None
                self.wfile.write(rest)
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _cfg(tmp_path, **kw):
    return DownloadConfig.from_params({"base_url": "http://unused", "partial_dir": str(tmp_path / "partial"),
                                       "retries": 3, "backoff_seconds": 0.01, "timeout_seconds": 1,
                                       "progress": False, **kw})


def _raw(tmp_path) -> Path:
    raw = tmp_path / "01_raw"
    raw.mkdir(exist_ok=True)
    return raw


def test_a_file_is_fetched_checked_renamed_and_then_skipped(server, tmp_path):
    raw, cfg = _raw(tmp_path), _cfg(tmp_path)
    got = fetch(server.url + "/ok/Cat_5.json.gz", raw / "Cat_5.json.gz", cfg)
    assert got["status"] == "downloaded" and (raw / "Cat_5.json.gz").read_bytes() == PAYLOAD
    assert list(raw.iterdir()) == [raw / "Cat_5.json.gz"] and not list((tmp_path / "partial").iterdir())
    again = fetch(server.url + "/ok/Cat_5.json.gz", raw / "Cat_5.json.gz", cfg)
    assert again["status"] == "skipped" and server.hits["ok"] == 1  # no request at all


def test_a_dropped_connection_is_resumed_with_range(server, tmp_path):
    raw = _raw(tmp_path)
    got = fetch(server.url + "/drop/Cat_5.json.gz", raw / "Cat_5.json.gz", _cfg(tmp_path))
    assert (raw / "Cat_5.json.gz").read_bytes() == PAYLOAD
    assert got["resumed"] == 1 and got["retries"] == 1 and server.hits["drop"] == 2
    assert server.ranges == [f"bytes={len(PAYLOAD) // 2}-"]  # it asked only for the missing half


def test_a_stalled_transfer_times_out_and_resumes(server, tmp_path):
    raw = _raw(tmp_path)
    got = fetch(server.url + "/stall/Cat_5.json.gz", raw / "Cat_5.json.gz", _cfg(tmp_path))
    assert (raw / "Cat_5.json.gz").read_bytes() == PAYLOAD and got["retries"] == 1 and got["resumed"] == 1


def test_a_server_that_ignores_range_restarts_the_file(server, tmp_path):
    raw, cfg = _raw(tmp_path), _cfg(tmp_path)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "Cat_5.json.gz.part").write_bytes(PAYLOAD[:1000] + b"garbage")
    fetch(server.url + "/norange/Cat_5.json.gz", raw / "Cat_5.json.gz", cfg)
    assert (raw / "Cat_5.json.gz").read_bytes() == PAYLOAD


def test_500s_are_retried_with_backoff(server, tmp_path):
    raw = _raw(tmp_path)
    got = fetch(server.url + "/flaky/Cat_5.json.gz", raw / "Cat_5.json.gz", _cfg(tmp_path))
    assert got["retries"] == 2 and (raw / "Cat_5.json.gz").read_bytes() == PAYLOAD


@pytest.mark.parametrize(("route", "message", "hits"), [
    ("404", r"/404/Cat_5\.json\.gz: HTTP 404 Not Found", 1),  # not retried
    ("500", r"/500/Cat_5\.json\.gz: failed after 4 attempts \(_Retryable: HTTP 500\)", 4),
    ("corrupt", r"/corrupt/Cat_5\.json\.gz: the downloaded file is not a complete gzip file", 1),
])
def test_failures_name_the_url_and_status_and_leave_nothing_half_written(server, tmp_path, route, message, hits):
    raw = _raw(tmp_path)
    with pytest.raises(DownloadError, match=message):
        fetch(f"{server.url}/{route}/Cat_5.json.gz", raw / "Cat_5.json.gz", _cfg(tmp_path))
    assert list(raw.iterdir()) == [] and server.hits[route] == hits


def test_configuration_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="download.base_url is missing"):
        DownloadConfig.from_params({})
    with pytest.raises(ConfigError, match=r"download: unknown parameter\(s\) \['retry'\]"):
        DownloadConfig.from_params({"base_url": "http://x", "retry": 3})
    cfg = DownloadConfig.from_params({"base_url": "http://mirror/amazon/"})
    assert cfg.url("meta", "meta_Cat.json.gz") == "http://mirror/amazon/metaFiles2/meta_Cat.json.gz"
    assert cfg.url("reviews_5", "Cat_5.json.gz") == "http://mirror/amazon/categoryFilesSmall/Cat_5.json.gz"


def test_the_download_pipeline_fetches_a_category_then_skips_it(server, tmp_path, monkeypatch):
    from tests.conftest import copy_project, kedro_session

    project = copy_project(tmp_path / "project")
    monkeypatch.chdir(project)
    params = {"raw": {"category": "Cat"},
              "download": {"base_url": server.url + "/ok", "paths": {"reviews_5": "{file}", "meta": "{file}"},
                           "backoff_seconds": 0.01, "progress": False}}
    with kedro_session(project, extra=params) as session:
        session.run(pipeline_name="download")
    report = json.loads((project / "data" / "08_reporting" / "download.json").read_text())
    assert [Path(f["path"]).name for f in report["files"]] == ["Cat_5.json.gz", "meta_Cat.json.gz"]
    assert all(f["status"] == "downloaded" for f in report["files"])
    assert sorted(p.name for p in (project / "data" / "01_raw").iterdir()) == ["Cat_5.json.gz", "meta_Cat.json.gz"]
    with kedro_session(project, extra=params) as session:
        session.run(pipeline_name="download")
    report = json.loads((project / "data" / "08_reporting" / "download.json").read_text())
    assert {f["status"] for f in report["files"]} == {"skipped"}
    with kedro_session(project) as session, pytest.raises(ConfigError, match="synthetic demo: nothing to download"):
        session.run(pipeline_name="download")
