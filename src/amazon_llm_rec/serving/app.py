"""The FastAPI application: /recommendations, /products, /reviewers, /health, /ready, the page at /."""


import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import MicroBatcher
from .config import Limits, ServingSettings
from .service import Query as RecQuery
from .service import RecommenderService, UnknownProductError

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
Entry = Annotated[str, StringConstraints(min_length=1, max_length=300)]


class Product(BaseModel):
    """A catalogue product."""

    asin: str
    title: str


class Recommended(BaseModel):
    """One recommended product."""

    asin: str
    title: str
    score: float = Field(description="the ranker's score (higher is better)")
    retriever_rank: int | None = Field(description="its place in the retriever's candidates (null: given by the caller)")
    source: str = Field(description="which retriever source proposed it, or 'request'")


class RecommendationResponse(BaseModel):
    """The ranked products for one history."""

    items: list[Recommended]
    history: list[Product]
    ranker: str
    took_ms: float


class TestReviewer(BaseModel):
    """A test reviewer: their history and the product they really bought next."""

    reviewer_id: str
    history: list[Product]
    next: Product


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over `max_bytes` (413), declared or streamed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_json(send, 413, {"detail": f"body: request body over {self.max_bytes} bytes (serving.limits.max_body_bytes)"})
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            return await self.app(scope, limited, send)
        except _TooLarge:
            return await _send_json(send, 413, {"detail": f"body: request body over {self.max_bytes} bytes (serving.limits.max_body_bytes)"})


class _TooLarge(Exception):
    pass


async def _send_json(send, status: int, body: dict[str, Any]) -> None:
    import json  # noqa: PLC0415

    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


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
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI's, e.g. bad UTF-8
            detail = "body: could not be read as JSON text (is it UTF-8?)"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(UnknownProductError)
    async def unknown(request: Request, exc: UnknownProductError):
        field = f"{exc.field}.{exc.index}"
        return JSONResponse({"detail": f"{field}: {exc}", "errors": [{"field": field, "message": str(exc),
                                                                      "type": "unknown_product"}]}, status_code=422)


def request_model(limits: Limits) -> type[BaseModel]:
    """The body of POST /recommendations, bounded by `serving.limits`."""

    class RecommendationRequest(BaseModel):
        """A customer's history (ASINs or exact titles, oldest first) and what to return."""

        model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
            {"history": ["B0002YWNLS", "B001HRMJ54"], "k": 10, "exclude_bought": True}]})
        history: list[Entry] = Field(min_length=1, max_length=limits.max_history,
                                     description="products bought, oldest first: ASINs or exact titles")
        k: int = Field(10, ge=1, le=limits.max_k, description="how many products to return")
        exclude_bought: bool = Field(True, description="leave out the products in the history")
        candidates: list[Entry] | None = Field(None, min_length=1, max_length=limits.max_candidates,
                                               description="re-rank these instead of retrieving from the catalogue")

    return RecommendationRequest


def create_app(settings: ServingSettings, build: Callable[[], RecommenderService]) -> FastAPI:  # noqa: PLR0915 - the route table
    """The application; `build` loads the recommender (once, in the background, so /health answers meanwhile)."""
    limits = settings.limits
    state: dict[str, Any] = {"service": None, "error": None, "batcher": None}

    RecommendationRequest = request_model(limits)  # noqa: N806 - a class

    def run(queries: list[RecQuery]):
        return state["service"].run_batch(queries)

    async def load() -> None:
        try:
            service = await asyncio.to_thread(build)
        except Exception as exc:  # noqa: BLE001 - reported by /ready
            logger.exception("the recommender failed to load")
            state["error"] = f"{type(exc).__name__}: {exc}"
            return
        batcher = MicroBatcher(run, settings.max_batch, settings.max_wait_ms)
        await batcher.start()
        state["batcher"], state["service"] = batcher, service

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(load()) if state["service"] is None else None  # load once per process
        yield
        if task:
            task.cancel()
        if state["batcher"] and state["batcher"].loop is asyncio.get_running_loop():
            await state["batcher"].stop()
            state["batcher"], state["service"] = None, None

    app = FastAPI(title="amazon-llm-rec", version="1", lifespan=lifespan,
                  description="Next-product recommendations over the whole catalogue: a retriever proposes "
                              "candidates, the project's fitted ranker (recommend.ranker: a fusion of the evidence, with or without "
                              "the fine-tuned LLM's score) re-ranks them.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when the service has a key")

    def require_key(key: Annotated[str | None, Depends(header)]) -> None:
        if settings.api_key and not (key and hmac.compare_digest(key.encode(), settings.api_key.encode())):
            raise HTTPException(401, detail="missing or wrong API key (X-API-Key header)",
                                headers={"WWW-Authenticate": "X-API-Key"})

    def ready_service() -> RecommenderService:
        if state["service"] is None:
            raise HTTPException(503, detail=state["error"] or "the recommender is still loading")
        return state["service"]

    _install_error_handlers(app)

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, str]:
        """The process is up (no key needed)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], dependencies=[Depends(require_key)],
             responses={503: {"description": "still loading, or failed to load"}})
    def ready() -> dict[str, Any]:
        """The recommender is loaded and answers; what it serves."""
        service = ready_service()
        stats = state["batcher"].stats
        return {"ready": True, **service.info, "batches": stats.batches, "requests": stats.requests,
                "largest_batch": stats.largest}

    @app.post("/recommendations", tags=["recommendations"], dependencies=[Depends(require_key)],
              response_model=RecommendationResponse,
              responses={422: {"description": "a field is invalid; `detail` names it"},
                         413: {"description": "body too large"}, 503: {"description": "still loading"}})
    async def recommendations(body: RecommendationRequest) -> RecommendationResponse:
        """Rank the whole catalogue (or the given candidates) for a history."""
        service = ready_service()
        start = time.perf_counter()
        history = service.resolve(list(body.history), "history")
        candidates = service.resolve(list(body.candidates), "candidates") if body.candidates else None
        items = await state["batcher"].submit(RecQuery(history, body.k, body.exclude_bought, candidates))
        return RecommendationResponse(items=items, history=[service.product(a) for a in history],
                                      ranker=service.info["ranker"], took_ms=round(1000 * (time.perf_counter() - start), 1))

    @app.get("/products", tags=["catalogue"], dependencies=[Depends(require_key)])
    def products(q: Annotated[str, Query(min_length=1, max_length=limits.max_query_chars)],
                 limit: Annotated[int, Query(ge=1, le=limits.max_search_results)] = 10) -> list[Product]:
        """Search the catalogue's titles (every word must appear) or ASIN prefixes, popular products first."""
        return [Product(**p) for p in ready_service().search(q, limit)]

    @app.get("/reviewers", tags=["catalogue"], dependencies=[Depends(require_key)])
    def reviewers(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[TestReviewer]:
        """Test reviewers: what they bought before their test window and what they really bought next."""
        return [TestReviewer(**r) for r in ready_service().reviewers[:limit]]

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        """The page to try the service (static; it sends the API key it is given with every call)."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.state.serving = state
    return app
