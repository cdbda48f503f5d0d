"""Project hooks: a clear message when a pipeline's inputs were never produced; Unsloth first."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from .core.errors import MissingInputError

logger = logging.getLogger(__name__)


def _all_pipelines() -> dict:
    import importlib  # noqa: PLC0415
    import pkgutil  # noqa: PLC0415

    from . import pipelines as package  # noqa: PLC0415

    return {
        m.name: importlib.import_module(f"{package.__name__}.{m.name}").create_pipeline()
        for m in pkgutil.iter_modules(package.__path__)
        if m.ispkg
    }


class ProjectHooks:
    """Checks a run's inputs before it starts, and imports Unsloth first when it is the backend."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Fail early, naming the pipeline to run first, when a needed dataset does not exist."""
        pipelines = _all_pipelines()  # all of them: Kedro may have loaded only the one it runs

        produced = pipeline.all_outputs()
        missing = []
        for name in sorted(pipeline.inputs()):
            if name.startswith("params:") or name == "parameters" or name in produced:
                continue
            try:
                exists = catalog.exists(name)
            except Exception:  # noqa: BLE001 - a dataset that cannot tell is treated as missing
                exists = False
            if not exists:
                producers = [p for p, pipe in pipelines.items() if name in pipe.all_outputs()]
                missing.append(f"'{name}' (made by: {', '.join(f'kedro run --pipeline={p}' for p in producers) or 'no pipeline'})")
        if missing:
            raise MissingInputError("this run needs datasets that do not exist yet: " + "; ".join(missing) + ". Run those pipelines first, or plain `kedro run`.")
        self._connect_data_engine(pipeline, catalog)
        self._only_rank_zero_saves(pipeline, catalog)
        self._import_unsloth_first(catalog)

    @staticmethod
    def _only_rank_zero_saves(pipeline, catalog) -> None:
        """Under `torchrun`/`accelerate launch` (data-parallel training), only rank 0 writes the run's outputs."""
        from kedro.io import MemoryDataset  # noqa: PLC0415

        from .core.llm.training import world  # noqa: PLC0415

        rank, world_size = world()
        if rank == 0:
            return
        for name in pipeline.all_outputs():
            catalog[name] = MemoryDataset(copy_mode="assign")
        logger.info("Rank %d of %d: this process's outputs stay in memory (rank 0 saves them)", rank, world_size)

    @staticmethod
    def _connect_data_engine(pipeline, catalog) -> None:
        """Open the data engine of `raw.engine` when this run reads engine tables (data_processing, in part or
        whole), so they load on it; other pipelines never start it (a Spark session takes seconds)."""
        from .datasets import EngineTableDataset  # noqa: PLC0415

        def engine_table(name: str) -> bool:
            try:
                dataset = catalog.get(name)
            except Exception:  # noqa: BLE001 - not a catalog entry (parameters, memory datasets)
                return False
            return isinstance(dataset, EngineTableDataset) and dataset.loads_tables

        if not any(engine_table(name) for name in pipeline.datasets()):
            return
        try:
            raw = catalog.load("params:raw")
        except Exception:  # noqa: BLE001 - no raw parameters in this run
            return
        from .core.data import engine  # noqa: PLC0415

        engine.connect(engine.EngineConfig.from_params(raw))

    @staticmethod
    def _import_unsloth_first(catalog) -> None:
        try:
            ft = catalog.load("params:fine_tuning")
        except Exception:  # noqa: BLE001 - no fine-tuning parameters in this run
            return
        if ft.get("backend") != "unsloth":
            return
        from .core.llm.training import unsloth_unavailable_reason  # noqa: PLC0415

        if unsloth_unavailable_reason() is None:
            import unsloth  # noqa: F401, PLC0415 - must come before transformers, peft and trl

            logger.info("Imported Unsloth before transformers/peft/trl")
