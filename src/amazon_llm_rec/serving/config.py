"""The service's settings and data, read through the project's Kedro configuration.

Every default lives in `conf/base/parameters_serving.yml`; `ServingSettings` only checks and types them, so a
missing, unknown or misspelled key, or a value of the wrong type, is refused with the parameter's full name."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..core.errors import ConfigError

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class Limits(BaseModel):
    """Request bounds (`serving.limits`)."""

    model_config = _STRICT
    max_history: int = Field(ge=1)
    max_k: int = Field(ge=1)
    max_candidates: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1)
    max_query_chars: int = Field(ge=1)
    max_search_results: int = Field(ge=1)


class MicroBatch(BaseModel):
    """`serving.micro_batch`: requests joined into one recommender call."""

    model_config = _STRICT
    max_batch: int = Field(ge=1)
    max_wait_ms: float = Field(ge=0)


class ServingSettings(BaseModel):
    """`params:serving`, checked once, plus the API key (environment or conf/local credentials)."""

    model_config = _STRICT
    host: str
    port: int = Field(ge=0, le=65535)
    api_key_env: str
    demo: bool
    fit_on: str = Field(pattern="^(before_test|all)$")
    micro_batch: MicroBatch
    max_queue: int = Field(ge=1)
    deadline_ms: float | None = Field(gt=0)
    shutdown_grace_s: float = Field(ge=0)
    collapse_variants: bool
    limits: Limits
    test_reviewers: int = Field(ge=0)
    api_key: str | None = Field(default=None, repr=False, exclude=True)

    @property
    def max_batch(self) -> int:
        """`serving.micro_batch.max_batch`."""
        return self.micro_batch.max_batch

    @property
    def max_wait_ms(self) -> float:
        """`serving.micro_batch.max_wait_ms`."""
        return self.micro_batch.max_wait_ms

    @classmethod
    def from_params(cls, serving: dict[str, Any] | None, credentials: dict[str, Any] | None = None,
                    environ: dict[str, str] | None = None) -> ServingSettings:
        """Build from `params:serving` and the credentials, naming the parameter at fault."""
        serving = dict(serving or {})
        if "api_key" in serving:
            raise ConfigError("serving.api_key must not be a parameter (conf/base is committed): export "
                              f"{serving.get('api_key_env', 'AMAZON_LLM_REC_API_KEY')} or set serving_api_key in "
                              "conf/local/credentials.yml")
        environ = os.environ if environ is None else environ
        key = environ.get(str(serving.get("api_key_env"))) or (credentials or {}).get("serving_api_key")
        try:
            return cls.model_validate({**serving, "api_key": key or None})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(["serving", *(str(p) for p in first["loc"])]) if first["loc"] else "serving"
            given = "" if first["type"] == "missing" else f", got {first.get('input')!r}"
            raise ConfigError(f"{name}: {first['msg']}{given} (conf/base/parameters_serving.yml)") from exc

    @model_validator(mode="after")
    def _demo_needs_unseen_targets(self) -> ServingSettings:
        if self.demo and self.fit_on != "before_test":
            raise ValueError("serving.demo shows test reviewers' real next products: it needs fit_on before_test "
                             "(with all, their own next purchase is in the counts the page recommends from)")
        return self


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ProjectData:
    """What the service loads from the catalogue."""

    items: Any
    sequences: Any
    test_prompts: Any
    fusion_model: dict[str, Any] | None
    retriever_mix: dict[str, Any] | None
    base_model: str | None
    adapter: str | None
    params: dict[str, Any]
    credentials: dict[str, Any]
    title_priors: Any = None   # each product's title prior (evaluation.title_score: pmi)
    title_embeddings: Any = None  # the catalogue's stored title vectors and search (None: encoded at start-up)


def project_settings(project_path: str | Path = ".", env: str | None = None,
                     runtime_params: dict[str, Any] | None = None) -> ServingSettings:
    """The service's settings from the project's configuration (no data loaded)."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    project_path = Path(project_path).resolve()
    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env, runtime_params=runtime_params) as session:
        context = session.load_context()
        try:
            credentials = context.config_loader["credentials"]
        except Exception:  # noqa: BLE001 - no credentials file is the common case
            credentials = {}
        return ServingSettings.from_params(context.params.get("serving"), credentials)


def load_project(project_path: str | Path = ".", env: str | None = None,
                 runtime_params: dict[str, Any] | None = None) -> ProjectData:
    """Load the catalogue's items, sequences, test prompts, fusion model, base model and adapter through Kedro."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    project_path = Path(project_path).resolve()
    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env, runtime_params=runtime_params) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        try:
            credentials = context.config_loader["credentials"]
        except Exception:  # noqa: BLE001 - no credentials file is the common case
            credentials = {}
        ranker = (params.get("recommend") or {}).get("ranker")

        def load(name: str, needed: bool) -> Any:
            try:
                return catalog.load(name)
            except Exception as exc:
                if needed:
                    raise ConfigError(f"the service needs the dataset {name!r} ({exc}): run `kedro run` first") from exc
                return None

        return ProjectData(items=load("items", True), sequences=load("reviewer_sequences", True),
                           test_prompts=load("test_prompts", False),
                           fusion_model=load("fusion_model", ranker != "retriever"),
                           retriever_mix=load("retriever_mix", ((params.get("recommend") or {}).get("retrieval") or {})
                                              .get("quotas") == "learned"),
                           base_model=load("base_model", ranker == "fusion"), adapter=load("lora_adapter", ranker == "fusion"),
                           params=params, credentials=credentials or {},
                           title_priors=load("title_priors", ranker == "fusion"
                                             and (params.get("evaluation") or {}).get("title_score") == "pmi"),
                           title_embeddings=load("title_embeddings", False))
