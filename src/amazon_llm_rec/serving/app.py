"""The FastAPI application: /recommendations, /products, /health, /ready, /metrics, the page at /; with
`serving.demo`, /reviewers; with a key, /admin/reload.

Closed by default: with a key (AMAZON_LLM_REC_API_KEY), every endpoint but /health and the page needs it; the
OpenAPI schema declares the key only then. Under load nothing fails that need not: a full queue answers 429 with
Retry-After, a request that would miss its deadline with the LLM is answered without it (`degraded`), a failing
request fails alone, and a model that fails to load makes /health fail so the orchestrator restarts the process."""


import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import annotated_types
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import MicroBatcher, QueueFullError, ShuttingDownError
from .config import Limits, ServingSettings
from .observability import Frontdoor, Metrics, send_json
from .service import Query as RecQuery
from .service import RecommenderService, UnknownProductError

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
Entry = Annotated[str, StringConstraints(min_length=1, max_length=300)]


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 20.0; strict pydantic would refuse it, so an integral float becomes an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class Product(BaseModel):
    """A catalogue product (its title as the catalogue lists it)."""

    asin: str
    title: str


class Recommended(BaseModel):
    """One recommended product."""

    asin: str
    title: str
    score: float = Field(description="the ranker's score (higher is better)")
    retriever_rank: int | None = Field(description="its place in the retriever's candidates (null: given by the caller)")
    source: str = Field(description="which retriever source proposed it, or 'request'")
    reason: str = Field(description="why, in one line, from the evidence")


class RecommendationResponse(BaseModel):
    """The ranked products for one history."""

    items: list[Recommended]
    history: list[Product]
    ranker: str = Field(description="the ranker that answered (the fallback when degraded)")
    degraded: bool = Field(description="answered without the LLM re-rank")
    degraded_reason: str | None = Field(description="why: the deadline, or the LLM raised")
    took_ms: float


class TestReviewer(BaseModel):
    """A test reviewer: their history and the product they really bought next."""

    reviewer_id: str
    history: list[Product]
    next: Product


class Health(BaseModel):
    """Liveness: `ok` while loading or serving, `failed` when the recommender could not load."""

    status: str


class Readiness(BaseModel):
    """Whether the recommender answers, and what it serves."""

    model_config = ConfigDict(extra="allow")
    ready: bool
    state: str = Field(description="loading | ready | failed")
    reloading: bool = False


class Detail(BaseModel):
    """An error; `detail` names the field at fault where there is one."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over `max_bytes` (413), declared or streamed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        message = {"detail": f"body: request body over {self.max_bytes} bytes (serving.limits.max_body_bytes)"}
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await send_json(send, 413, message)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    scope["body_too_large"] = True  # FastAPI turns the error into a 400: the handler makes it 413
                    raise _TooLargeError
            return msg

        try:
            return await self.app(scope, limited, send)
        except _TooLargeError:
            return await send_json(send, 413, message)


class _TooLargeError(Exception):
    pass


def _field(loc: list | tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query")]
    return ".".join(parts) if parts else "body"


def _install_error_handlers(app: FastAPI) -> None:
    """Errors as {"detail": "<field>: <message>", "errors": [...]}: every 4xx names the field at fault."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"field": "body", "message": f"invalid JSON at character {e['loc'][-1]}", "type": "json_invalid"}
                  if e.get("type") == "json_invalid" else
                  {"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()][:20]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return JSONResponse({"detail": f"{first['field']}: {first['message']}", "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if request.scope.get("body_too_large"):
            return JSONResponse({"detail": "body: request body over the limit (serving.limits.max_body_bytes)"},
                                status_code=413)
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's, e.g. bad UTF-8
            detail = "body: could not be read as JSON text (is it UTF-8?)"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(UnknownProductError)
    async def unknown(request: Request, exc: UnknownProductError):
        field = f"{exc.field}.{exc.index}"
        return JSONResponse({"detail": f"{field}: {exc}", "errors": [{"field": field, "message": str(exc),
                                                                      "type": "unknown_product"}]}, status_code=404)


async def strict_query(request: Request) -> None:
    """Refuse query parameters the operation does not declare (422 naming them), as unknown body fields are."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError([{"loc": ("query", unknown[0]), "msg": "unknown query parameter; known: "
                                       + (", ".join(sorted(known)) or "none"), "type": "extra_forbidden"}])


def _query_names(dependant) -> set[str]:
    """The query parameters an operation declares, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def request_model(limits: Limits) -> type[BaseModel]:
    """The body of POST /recommendations, bounded by `serving.limits` (its example is set from the served catalogue
    once loaded: `create_app`'s openapi)."""

    class RecommendationRequest(BaseModel):
        """A customer's history (ASINs or exact titles, oldest first) and what to return."""

        model_config = ConfigDict(extra="forbid", strict=True)
        history: list[Entry] = Field(min_length=1, max_length=limits.max_history,
                                     description="products bought, oldest first: ASINs or exact titles")
        k: Annotated[int, annotated_types.Interval(ge=1, le=limits.max_k), BeforeValidator(_integral)] | None = Field(
            None, description="how many products to return (default: the service's recommend.k)")
        exclude_bought: bool = Field(True, description="leave out the products in the history")
        candidates: list[Entry] | None = Field(None, min_length=1, max_length=limits.max_candidates,
                                               description="re-rank these instead of retrieving from the catalogue")

    return RecommendationRequest


ERRORS = {422: {"model": Detail, "description": "a field or query parameter is invalid; `detail` names it"},
          503: {"model": Detail, "description": "loading, failed to load, or shutting down"}}


def create_app(settings: ServingSettings, build: Callable[[], RecommenderService]) -> FastAPI:  # noqa: C901, PLR0915 - the route table
    """The application; `build` loads the recommender (once, in the background, so /health answers meanwhile;
    again on POST /admin/reload)."""
    limits = settings.limits
    metrics = Metrics()
    state: dict[str, Any] = {"service": None, "state": "loading", "batcher": None, "reloading": False,
                             "draining": False}
    RecommendationRequest = request_model(limits)  # noqa: N806 - a class
    keyed = bool(settings.api_key)

    def run(requests: list[tuple[RecommenderService, RecQuery]], deliver) -> list[Any]:
        """Each request by the service that resolved it (a reload may swap services between arrival and batch)."""
        out: list[Any] = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, (service, _) in enumerate(requests):
            groups.setdefault(id(service), []).append(i)
        for rows in groups.values():
            answers = requests[rows[0]][0].run_batch([requests[i][1] for i in rows],
                                                     lambda j, answer, rows=rows: deliver(rows[j], answer))
            for i, answer in zip(rows, answers, strict=True):
                out[i] = answer
        return out

    fallback_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fallback")

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch.observe(size)
        metrics.batch_seconds.observe(seconds)

    def checked_build() -> RecommenderService:
        start = time.perf_counter()
        service = build()
        service.self_check()
        metrics.load_seconds.set(time.perf_counter() - start)
        return service

    async def load() -> None:
        try:
            service = await asyncio.to_thread(checked_build)
        except Exception:  # noqa: BLE001 - the state says failed; the cause goes to the log only
            logger.exception("the recommender failed to load")
            metrics.loads.labels("failed").inc()
            state["state"] = "failed"
            return
        metrics.loads.labels("ok").inc()
        batcher = MicroBatcher(run, settings.max_batch, settings.max_wait_ms, settings.max_queue, on_batch)
        await batcher.start()
        state["batcher"], state["service"], state["state"] = batcher, service, "ready"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(load()) if state["service"] is None else None  # load once per process
        yield
        state["draining"] = True
        if task and not task.done():
            task.cancel()
        batcher = state["batcher"]
        if batcher and batcher.loop is asyncio.get_running_loop():
            await batcher.drain(1.0)  # uvicorn has already waited serving.shutdown_grace_s for requests in flight
            await batcher.stop()
            state["batcher"], state["service"] = None, None
        fallback_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="amazon-llm-rec", version="1", lifespan=lifespan, dependencies=[Depends(strict_query)],
                  description="Next-product recommendations over the whole catalogue: a retriever proposes "
                              "candidates, the project's fitted ranker (recommend.ranker: a fusion of the evidence, with or without "
                              "the fine-tuned LLM's score) re-ranks them.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(Frontdoor, metrics=metrics, state=state)

    if keyed:
        header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key")

        def require_key(key: Annotated[str | None, Depends(header)]) -> None:
            if not (key and hmac.compare_digest(key.encode(), settings.api_key.encode())):
                raise HTTPException(401, detail="missing or wrong API key (X-API-Key header)",
                                    headers={"WWW-Authenticate": "X-API-Key"})

        guarded = [Depends(require_key)]
        auth = {401: {"model": Detail, "description": "missing or wrong API key"}}
    else:
        guarded, auth = [], {}

    def ready_service() -> RecommenderService:
        if state["draining"]:
            raise HTTPException(503, detail="the service is shutting down", headers={"Retry-After": "1"})
        if state["service"] is None:
            raise HTTPException(503, detail=f"the recommender is {state['state']}", headers={"Retry-After": "5"})
        return state["service"]

    _install_error_handlers(app)

    @app.get("/health", tags=["operations"], response_model=Health,
             responses={422: ERRORS[422],
                        503: {"model": Health, "description": "the recommender failed to load: restart the process"}})
    def health():
        """Liveness (no key needed): 503 once the recommender has failed to load, so an orchestrator restarts it."""
        if state["state"] == "failed":
            return JSONResponse({"status": "failed"}, status_code=503)
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], dependencies=guarded, response_model=Readiness,
             responses={**auth, 422: ERRORS[422],
                        503: {"model": Readiness, "description": "loading, failed to load, or shutting down"}})
    def ready():
        """Readiness: the recommender is loaded and answers; what it serves (no paths, no exception text)."""
        service = state["service"]
        if service is None or state["draining"]:
            return JSONResponse({"ready": False, "state": "draining" if state["draining"] else state["state"],
                                 "reloading": False}, status_code=503)
        stats = state["batcher"].stats
        return {"ready": True, "state": "ready", "reloading": state["reloading"], **service.info,
                "batches": stats.batches, "requests": stats.requests, "largest_batch": stats.largest,
                "rejected": stats.rejected, "queue_depth": state["batcher"].depth}

    @app.post("/recommendations", tags=["recommendations"], dependencies=guarded,
              response_model=RecommendationResponse,
              responses={**auth, **ERRORS, 400: {"model": Detail, "description": "the body is not JSON text"},
                         404: {"model": Detail, "description": "a history or candidate product is not in the catalogue; "
                                                                "`detail` names it"},
                         413: {"model": Detail, "description": "body too large"},
                         429: {"model": Detail, "description": "the queue is full: retry after Retry-After seconds",
                               "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                         500: {"model": Detail, "description": "this request failed (the others go on)"}})
    async def recommendations(body: RecommendationRequest, request: Request) -> RecommendationResponse:  # type: ignore[valid-type]
        """Rank the whole catalogue (or the given candidates) for a history."""
        service = ready_service()
        start = time.perf_counter()
        deadline = None if settings.deadline_ms is None else time.monotonic() + settings.deadline_ms / 1000
        history = service.resolve(list(body.history), "history")
        candidates = service.resolve(list(body.candidates), "candidates") if body.candidates else None
        batcher: MicroBatcher = state["batcher"]
        query = RecQuery(history, body.k, body.exclude_bought, candidates, deadline)
        try:
            if service.late(deadline, batcher.depth):  # the LLM path would miss the deadline behind the queue
                answer = (await asyncio.get_running_loop().run_in_executor(
                    fallback_pool, service.answer_degraded, [query]))[0]
            else:
                answer = await batcher.submit((service, query))
        except QueueFullError as exc:
            metrics.rejected.inc()
            raise HTTPException(429, detail=str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
        except ShuttingDownError as exc:
            raise HTTPException(503, detail=str(exc), headers={"Retry-After": "1"}) from exc
        ranker = service.info["ranker"]
        if answer.degraded_reason:
            reason = answer.degraded_reason.split(":")[0]
            metrics.degraded.labels(reason).inc()
            request.state.degraded = reason
            ranker = service.info["fallback"]
        return RecommendationResponse(items=answer.items, history=[service.product(a) for a in history], ranker=ranker,
                                      degraded=answer.degraded_reason is not None,
                                      degraded_reason=answer.degraded_reason,
                                      took_ms=round(1000 * (time.perf_counter() - start), 1))

    @app.get("/products", tags=["catalogue"], dependencies=guarded, responses={**auth, **ERRORS})
    def products(q: Annotated[str, Query(min_length=1, max_length=limits.max_query_chars)],
                 limit: Annotated[int, Query(ge=1, le=limits.max_search_results)] = 10) -> list[Product]:
        """Search the catalogue's titles (every word must appear) or ASIN prefixes, popular products first."""
        return [Product(**p) for p in ready_service().search(q, limit)]

    if settings.demo:
        @app.get("/reviewers", tags=["demo"], dependencies=guarded, responses={**auth, **ERRORS})
        def reviewers(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[TestReviewer]:
            """Test reviewers (serving.demo only): their history before the test window and what they bought next."""
            return [TestReviewer(**r) for r in ready_service().reviewers[:limit]]

    if keyed:
        lock = asyncio.Lock()

        @app.post("/admin/reload", tags=["operations"], dependencies=guarded,
                  responses={**auth, 422: ERRORS[422], 409: {"model": Detail, "description": "a reload is already running"},
                             500: {"model": Detail, "description": "the new model failed its check; the old one serves"},
                             503: {"model": Detail, "description": "not loaded yet"}})
        async def reload() -> dict[str, Any]:
            """Load the catalogue's latest adapter version and check it; the old model serves until then."""
            ready_service()
            if lock.locked():
                raise HTTPException(409, detail="a reload is already running")
            async with lock:
                state["reloading"] = True
                try:
                    new = await asyncio.to_thread(checked_build)
                except Exception as exc:
                    logger.exception("the reload failed; the previous model still serves")
                    metrics.loads.labels("failed").inc()
                    raise HTTPException(500, detail="the new model failed to load or its check; the previous one "
                                                    "still serves (the log has the cause)") from exc
                finally:
                    state["reloading"] = False
                metrics.loads.labels("ok").inc()
                old, state["service"] = state["service"], new
                logger.info("reloaded: adapter %s -> %s", old.info["adapter_version"], new.info["adapter_version"])
                return {"reloaded": True, "previous": old.info["adapter_version"], **new.info}

    @app.get("/metrics", tags=["operations"], dependencies=guarded, include_in_schema=False)
    def prometheus() -> Response:
        """Prometheus metrics."""
        if state["batcher"] is not None:
            metrics.queue.set(state["batcher"].depth)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        """The page to try the service (static; it sends the API key it is given with every call)."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    def openapi() -> dict[str, Any]:
        """The schema, with the example history drawn from the served catalogue once it is loaded."""
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        service = state["service"]
        if service is not None:
            body = schema["components"]["schemas"].get("RecommendationRequest")
            if body is not None:
                body["examples"] = [{"history": service.example, "k": 10, "exclude_bought": True}]
            app.openapi_schema = schema
        return schema

    app.openapi = openapi
    app.state.serving = state
    app.state.metrics = metrics
    return app
