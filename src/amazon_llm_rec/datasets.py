"""Kedro datasets for models: the base model folder and the versioned LoRA adapter."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import AbstractDataset

from .core.llm.models import materialize_base_model


@contextmanager
def _folder_written_atomically(target: Path, prefix: str):
    """Yield a temporary folder beside `target`; on success it replaces `target` (a rename), on failure it goes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))
    try:
        yield tmp
        _remove(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BaseModelDataset(AbstractDataset[str, str]):
    """A base causal LM. Saving a model name resolves it (converting the embedded GGUF once into
    `path`); loading returns what transformers' `from_pretrained` takes: a folder or a hub id."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _save(self, data: str) -> None:
        resolved = materialize_base_model(data, str(self._path))
        self._path.mkdir(parents=True, exist_ok=True)
        (self._path / "resolved.json").write_text(json.dumps(resolved))

    def _load(self) -> str:
        marker = self._path / "resolved.json"
        if not marker.is_file():
            raise DatasetError(
                f"no base model resolved in {self._path}: run `kedro run --pipeline=fine_tuning` first"
            )
        return json.loads(marker.read_text())["path"]

    def _exists(self) -> bool:
        return (self._path / "resolved.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class LoRAAdapterDataset(AbstractVersionedDataset[Any, str]):
    """A LoRA adapter (safetensors), its tokenizer and a training summary, in a versioned folder.

    Saving takes a `TrainedAdapter`; loading returns the adapter folder's path, which
    `peft.PeftModel.from_pretrained` takes on top of the base model.
    """

    def __init__(self, path: str, version: Version | None = None, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(filepath=PurePosixPath(path), version=version)
        self.metadata = metadata

    def _save(self, data: Any) -> None:
        with _folder_written_atomically(Path(self._get_save_path()), ".adapter-") as tmp:
            data.model.save_pretrained(tmp)
            data.tokenizer.save_pretrained(tmp)
            (tmp / "training_summary.json").write_text(json.dumps(data.summary, indent=2, default=str))

    def _load(self) -> str:
        path = Path(self._get_load_path())
        if not (path / "adapter_config.json").is_file():
            raise DatasetError(f"{path} holds no LoRA adapter (adapter_config.json)")
        return str(path)

    def _exists(self) -> bool:
        try:
            return Path(self._get_load_path()).is_dir()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "version": self._version}


class MergedModelDataset(AbstractDataset[Any, str]):
    """A full 16-bit model with the LoRA adapter merged in (optional export). Saving takes a
    `TrainedAdapter` whose model is merged (nothing is written when it is None); loading returns the path."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _save(self, data: Any) -> None:
        if data.model is None:
            return
        with _folder_written_atomically(self._path, ".merged-") as tmp:
            data.model.save_pretrained(tmp)
            data.tokenizer.save_pretrained(tmp)

    def _load(self) -> str:
        if not (self._path / "config.json").is_file():
            raise DatasetError(f"no merged model in {self._path}: set evaluation.export_merged: true and run evaluation")
        return str(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class EngineTableDataset(AbstractDataset[Any, Any]):
    """A Parquet table written and read by the data engine (DuckDB or PySpark, `core.engine`).

    Saving takes an Ibis table (executed by its own backend, streaming, so it never passes through
    pandas) or a pandas DataFrame, into a temporary path renamed into place. Loading returns an Ibis
    table on the current engine (`load_as: table`, for the next data_processing node) or a pandas
    DataFrame (`load_as: pandas`, for the pipelines and notebooks downstream). Spark writes a folder
    of part files; pandas and DuckDB read either."""

    def __init__(self, filepath: str, load_as: str = "table", metadata: dict[str, Any] | None = None) -> None:
        if load_as not in {"table", "pandas"}:
            raise DatasetError(f"{filepath}: load_as must be 'table' or 'pandas', got {load_as!r}")
        self._path = Path(filepath)
        self._load_as = load_as
        self.metadata = metadata

    def _save(self, data: Any) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            if isinstance(data, pd.DataFrame):
                data.to_parquet(tmp, index=False)
            else:
                data.get_backend().to_parquet(data, str(tmp))
            _remove(self._path)
            os.replace(tmp, self._path)
        finally:
            _remove(tmp)

    def _load(self) -> Any:
        if not self._path.exists():
            raise DatasetError(f"{self._path} does not exist: run `kedro run --pipeline=data_processing` first")
        if self._load_as == "pandas":
            return pd.read_parquet(self._path)
        from .core.data import engine  # noqa: PLC0415

        backend = engine.current()
        path = str(self._path / "*.parquet") if self._path.is_dir() and engine.engine_name(backend) == "duckdb" else str(self._path)
        return backend.read_parquet(path)

    @property
    def loads_tables(self) -> bool:
        """Whether loading returns an Ibis table on the data engine (rather than pandas)."""
        return self._load_as == "table"

    def _exists(self) -> bool:
        return self._path.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path), "load_as": self._load_as}


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class TitleEmbeddingsDataset(AbstractDataset[Any, Any]):
    """The catalogue's title embeddings (`core.rank.ann.TitleEmbeddings`) in a folder: `vectors.npy` (float32, one
    row a product), `asins.parquet` (the rows' products), `meta.json` (the encoder, the search's settings) and, above
    the ANN threshold, the FAISS HNSW graph `hnsw.faiss`, so that no process encodes the titles or builds the
    graph again. Written to a temporary folder renamed into place."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def _save(self, data: Any) -> None:
        import numpy as np  # noqa: PLC0415
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415

        with _folder_written_atomically(self._path, ".embeddings-") as tmp:
            np.save(tmp / "vectors.npy", data.matrix)
            pq.write_table(pa.table({"asin": pa.array(data.asins, pa.string())}), tmp / "asins.parquet")
            search = data.index
            meta = {"model": data.model, "fingerprint": data.fingerprint,
                    "ann": None if search is None else vars(search.config)}
            if search is not None and search.index is not None:
                import faiss  # noqa: PLC0415

                faiss.write_index(search.index, str(tmp / "hnsw.faiss"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))

    def _load(self) -> Any:
        import numpy as np  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415

        from .core.rank.ann import AnnConfig, EmbeddingIndex, TitleEmbeddings  # noqa: PLC0415

        if not (self._path / "meta.json").is_file():
            raise DatasetError(f"no title embeddings in {self._path}: run `kedro run --pipeline=evaluation --nodes=embed_titles`")
        meta = json.loads((self._path / "meta.json").read_text())
        matrix = np.load(self._path / "vectors.npy")
        asins = pq.read_table(self._path / "asins.parquet")["asin"].to_pylist()
        search = None
        if meta["ann"] is not None:
            graph = None
            if (self._path / "hnsw.faiss").is_file():
                import faiss  # noqa: PLC0415

                graph = faiss.read_index(str(self._path / "hnsw.faiss"))
            search = EmbeddingIndex(matrix, AnnConfig(**meta["ann"]), index=graph)
        return TitleEmbeddings(asins, matrix, meta["model"], meta["fingerprint"], search)

    def _exists(self) -> bool:
        return (self._path / "meta.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
