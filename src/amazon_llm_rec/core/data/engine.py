"""The data engine of data_processing: DuckDB in this process, or PySpark (local or a cluster), both through Ibis.

The nodes build the same Ibis expressions on either engine; only opening the raw JSON lines differs
(`raw_io`). `raw.engine` picks the engine and `raw.engines.<name>` holds its settings. One backend
per settings is kept for the life of the process, so that the catalog's engine datasets
(`datasets.EngineTableDataset`) load and save on the backend the nodes built their tables on.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

ENGINES = ("duckdb", "pyspark")
# settings each engine takes: DuckDB's go to `ibis.duckdb.connect` (a bounded memory_limit: DuckDB spills above it)
KNOWN_SETTINGS = {
    "duckdb": ("memory_limit", "threads", "temp_directory", "preserve_insertion_order"),
    "pyspark": ("master", "app_name", "config", "log_level"),
}
# Spark defaults for a laptop; a cluster's `master` and `config` come from raw.engines.pyspark
SPARK_DEFAULTS = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.sql.shuffle.partitions": "8"}


@dataclass(frozen=True)
class EngineConfig:
    """Which engine runs data_processing, and its settings (`raw.engine`, `raw.engines.<engine>`)."""

    name: str = "duckdb"
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, raw: dict[str, Any]) -> EngineConfig:
        """Build from the `raw` parameters, naming the parameter at fault."""
        name = raw.get("engine") or "duckdb"
        if name not in ENGINES:
            raise ConfigError(f"parameter raw.engine must be one of {', '.join(ENGINES)}; got {name!r}")
        settings = dict((raw.get("engines") or {}).get(name) or {})
        unknown = sorted(set(settings) - set(KNOWN_SETTINGS[name]))
        if unknown:
            raise ConfigError(f"raw.engines.{name}: unknown setting(s) {unknown}; known: {list(KNOWN_SETTINGS[name])}")
        return cls(name, settings)

    @property
    def key(self) -> str:
        """A stable key of the engine and its settings."""
        return json.dumps([self.name, self.settings], sort_keys=True, default=str)


_BACKENDS: dict[str, Any] = {}
_CURRENT: list[Any] = []
_SCRATCH: list[str] = []


def connect(config: EngineConfig) -> Any:
    """Return the Ibis backend for `config` (one per settings and process) and make it the current one."""
    backend = _BACKENDS.get(config.key)
    if backend is None:
        backend = _duckdb(config.settings) if config.name == "duckdb" else _pyspark(config.settings)
        _BACKENDS[config.key] = backend
        logger.info("Data engine: %s %s", config.name, config.settings or "(defaults)")
    _CURRENT[:] = [backend]
    return backend


def current() -> Any:
    """The backend the last `connect` returned (DuckDB with defaults when none was asked for yet)."""
    return _CURRENT[0] if _CURRENT else connect(EngineConfig())


def engine_name(backend: Any) -> str:
    """'duckdb' or 'pyspark' for an Ibis backend."""
    return str(getattr(backend, "name", "duckdb"))


def scratch_dir() -> str:
    """A folder that lives as long as the process (converted raw files that lazy tables still read)."""
    if not _SCRATCH:
        path = tempfile.mkdtemp(prefix="amazon-llm-rec-")
        _SCRATCH.append(path)
        atexit.register(shutil.rmtree, path, True)
    return _SCRATCH[0]


def _duckdb(settings: dict[str, Any]) -> Any:
    import ibis  # noqa: PLC0415

    return ibis.duckdb.connect(**{k: v for k, v in settings.items() if v is not None})


def _pyspark(settings: dict[str, Any]) -> Any:
    try:
        import ibis  # noqa: PLC0415
        from pyspark.sql import SparkSession  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            "raw.engine is 'pyspark' but PySpark is not installed: `pip install -e '.[spark]'` (needs Java 17)"
        ) from exc
    master = str(settings.get("master") or "local[*]")
    builder = SparkSession.builder.master(master).appName(str(settings.get("app_name") or "amazon-llm-rec"))
    if master.startswith("local"):  # the title-cleaning UDFs run in Python workers: this interpreter, with this package
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # (a cluster's workers need `pip install amazon-llm-rec`)
    for key, value in {**SPARK_DEFAULTS, **(settings.get("config") or {})}.items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(str(settings.get("log_level") or "ERROR"))
    return ibis.pyspark.connect(session)
