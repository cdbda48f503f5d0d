"""The service's settings and data, read through the project's Kedro configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError


@dataclass
class Limits:
    """Request bounds."""

    max_history: int = 50
    max_k: int = 100
    max_candidates: int = 200
    max_body_bytes: int = 65536
    max_query_chars: int = 200
    max_search_results: int = 50


@dataclass
class ServingSettings:
    """`params:serving`, checked once, plus the API key (environment or conf/local credentials)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    fit_on: str = "before_test"
    max_batch: int = 16
    max_wait_ms: float = 10.0
    limits: Limits = field(default_factory=Limits)
    test_reviewers: int = 100

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
        key = environ.get(str(serving.get("api_key_env", "AMAZON_LLM_REC_API_KEY"))) or \
            (credentials or {}).get("serving_api_key")
        batch = serving.get("micro_batch") or {}
        limits = Limits(**{k: int(v) for k, v in (serving.get("limits") or {}).items() if k in Limits.__dataclass_fields__})
        unknown = sorted(set(serving.get("limits") or {}) - set(Limits.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"serving.limits: unknown {unknown}; known: {sorted(Limits.__dataclass_fields__)}")
        out = cls(host=str(serving.get("host", "127.0.0.1")), port=int(serving.get("port", 8000)), api_key=key or None,
                  fit_on=str(serving.get("fit_on", "before_test")), max_batch=int(batch.get("max_batch", 16)),
                  max_wait_ms=float(batch.get("max_wait_ms", 10)), limits=limits,
                  test_reviewers=int(serving.get("test_reviewers", 100)))
        if out.fit_on not in {"before_test", "all"}:
            raise ConfigError(f"serving.fit_on must be 'before_test' or 'all', got {out.fit_on!r}")
        if out.max_batch < 1 or out.max_wait_ms < 0:
            raise ConfigError("serving.micro_batch: max_batch must be >= 1 and max_wait_ms >= 0")
        for name, value in vars(limits).items():
            if value < 1:
                raise ConfigError(f"serving.limits.{name} must be a positive integer, got {value}")
        return out


@dataclass
class ProjectData:
    """What the service loads from the catalogue."""

    items: Any
    sequences: Any
    test_prompts: Any
    fusion_model: dict[str, Any] | None
    base_model: str | None
    adapter: str | None
    params: dict[str, Any]
    credentials: dict[str, Any]
    title_priors: Any = None   # each product's title prior (evaluation.title_score: pmi)


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
        ranker = (params.get("recommend") or {}).get("ranker", "fusion")

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
                           base_model=load("base_model", ranker == "fusion"), adapter=load("lora_adapter", ranker == "fusion"),
                           params=params, credentials=credentials or {},
                           title_priors=load("title_priors", ranker == "fusion"
                                             and (params.get("evaluation") or {}).get("title_score") == "pmi"))
