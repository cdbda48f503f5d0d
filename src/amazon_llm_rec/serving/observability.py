"""What an operator sees: Prometheus metrics (`/metrics`) and structured JSON logs that carry the request id."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_GOOD_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
logger = logging.getLogger("amazon_llm_rec.serving.access")


class Metrics:
    """The service's metrics, in a registry of its own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("http_request_duration_seconds", "Request latency by route and status",
                                 ["method", "route", "status"], registry=self.registry,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.queue = Gauge("recommender_queue_depth", "Requests waiting for or in the recommender",
                           registry=self.registry)
        self.batch = Histogram("recommender_batch_size", "Requests per recommender call", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64))
        self.batch_seconds = Histogram("recommender_batch_seconds", "Seconds per recommender call",
                                       registry=self.registry, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.degraded = Counter("recommendations_degraded_total", "Answers given without the LLM, by reason",
                                ["reason"], registry=self.registry)
        self.rejected = Counter("recommendations_rejected_total", "Requests refused with 429 (queue full)",
                                registry=self.registry)
        self.load_seconds = Gauge("model_load_seconds", "Seconds the last (re)load of the recommender took",
                                  registry=self.registry)
        self.loads = Counter("model_loads_total", "Recommender loads, by outcome", ["outcome"], registry=self.registry)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, and any `extra` fields."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        out: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                               + f".{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name,
                               "message": record.getMessage()}
        rid = request_id.get()
        if rid:
            out["request_id"] = rid
        out.update({k: v for k, v in vars(record).items() if k not in self._STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def logging_config(fmt: str = "json") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the service: JSON lines (`fmt="json"`) or plain text on stderr."""
    formatter = {"class": f"{__name__}.JsonFormatter"} if fmt == "json" else \
        {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    return {"version": 1, "disable_existing_loggers": False, "formatters": {"main": formatter},
            "handlers": {"main": {"class": "logging.StreamHandler", "formatter": "main"}},
            "loggers": {"uvicorn": {"handlers": [], "propagate": True}, "uvicorn.error": {"handlers": [], "propagate": True},
                        "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
                        "kedro": {"level": "WARNING"}},
            "root": {"handlers": ["main"], "level": "INFO"}}


def configure_logging(fmt: str = "json", folder: str | None = None) -> None:
    """Log as `logging_config(fmt)`, and make Kedro's sessions (which reconfigure logging) use the same: the config
    is written as YAML for KEDRO_LOGGING_CONFIG. The access log is ours (`Frontdoor`), with the request id."""
    import logging.config  # noqa: PLC0415
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    config = logging_config(fmt)
    path = os.path.join(folder or tempfile.gettempdir(), f"amazon_llm_rec_serving_logging_{fmt}_{os.getpid()}.yml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    os.environ["KEDRO_LOGGING_CONFIG"] = path
    allowed = [m for m in os.environ.get("KEDRO_LOGGING_MODULE_ALLOWLIST", "").split(",") if m]
    os.environ["KEDRO_LOGGING_MODULE_ALLOWLIST"] = ",".join(dict.fromkeys([*allowed, __name__]))
    logging.config.dictConfig(config)


class Frontdoor:
    """Pure ASGI middleware: a request id (the caller's X-Request-ID when well formed, else a new one) returned as
    X-Request-ID, 503 while the service drains for shutdown, one access-log line and the latency metric."""

    def __init__(self, app, metrics: Metrics, state: dict[str, Any]) -> None:
        self.app, self.metrics, self.state = app, metrics, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _GOOD_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        start = time.perf_counter()
        status = {"code": 500}

        async def tagged(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            if self.state.get("draining") and scope["path"] not in ("/health", "/ready", "/metrics"):
                await send_json(tagged, 503, {"detail": "the service is shutting down"}, [(b"retry-after", b"1")])
            else:
                await self.app(scope, receive, tagged)
        except Exception as exc:
            logging.getLogger("amazon_llm_rec.serving.app").error("unhandled %s", type(exc).__name__, exc_info=exc)
            if status.get("started"):  # too late for a clean answer: count it as a 500 and let the server close it
                status["code"] = 500
                raise
            await send_json(tagged, 500, {"detail": f"internal error (request {rid}); the log has the cause"})
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], route, str(status["code"])).observe(seconds)
            logger.info("%s %s %d", scope["method"], scope["path"], status["code"],
                        extra={"method": scope["method"], "path": scope["path"], "route": route,
                               "status": status["code"], "ms": round(1000 * seconds, 1),
                               **({"degraded": scope["state"]["degraded"]} if "degraded" in scope.get("state", {}) else {})})
            request_id.reset(token)


async def send_json(send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer an ASGI request with a JSON body (for middleware, below FastAPI)."""
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": payload})
