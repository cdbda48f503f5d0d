"""Experiment tracking with MLflow through kedro-mlflow: a run per `kedro run`, in a local `mlruns/` by default.

kedro-mlflow's own hook logs the parameters of every node that runs. This hook switches it on only when
`tracking.enabled` is true (conf/base/parameters_tracking.yml; `--params tracking.enabled=false` turns it off), sets
MLflow up lazily at the first pipeline run (sessions that only read the catalogue, such as the HTTP service, never touch
MLflow), and at the end of the run adds what kedro-mlflow cannot know:
- metrics: HR@1 and MRR with their 95% intervals per protocol and method, the whole-catalogue metrics, the training
  and validation loss by step;
- artifacts: the report, its plots, the summaries and the error analysis written by this run;
- the LoRA adapter, logged as an MLflow model (pyfunc) whose metadata names its base model.
Under data parallelism (`torchrun`) only rank 0 tracks.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

ARTIFACTS = ("report", "metrics_plot", "position_bias_plot", "loss_curves_plot", "comparison_summary", "metrics",
             "catalogue_metrics", "training_summary", "error_analysis", "merged_export_check")


def metric_name(*parts: str) -> str:
    """An MLflow metric name from parts: characters MLflow refuses become `_` (`hr@10` -> `hr_at_10`)."""
    return "/".join(re.sub(r"[^0-9A-Za-z_\-. ]", "_", p.replace("@", "_at_")) for p in parts)


def evaluation_metrics(metrics: dict[str, Any] | None, catalogue: dict[str, Any] | None) -> dict[str, float]:
    """The figures a run is compared by: per protocol and method HR@1 and MRR with their interval bounds; per
    whole-catalogue method its Recall/NDCG/MRR@k."""
    out: dict[str, float] = {}
    for protocol, entry in ((metrics or {}).get("protocols") or {}).items():
        for method, m in entry["methods"].items():
            for key, name in (("accuracy", "hr1"), ("mrr", "mrr")):
                out[metric_name(protocol, method, name)] = float(m[key])
                lo_hi = (m.get("ci95") or {}).get(key)
                if lo_hi:
                    out[metric_name(protocol, method, f"{name}_lo")] = float(lo_hi[0])
                    out[metric_name(protocol, method, f"{name}_hi")] = float(lo_hi[1])
    for method, m in ((catalogue or {}).get("methods") or {}).items():
        for key, value in m.items():
            if isinstance(value, int | float):
                out[metric_name("catalogue", method, key)] = float(value)
    return out


def adapter_model_class():
    """The pyfunc model of a LoRA adapter (defined on first use: MLflow is imported only when tracking runs)."""
    import mlflow.pyfunc  # noqa: PLC0415

    class LoRAAdapterModel(mlflow.pyfunc.PythonModel):
        """Scores candidate titles after a history with the base model (`model_config["base_model"]`, a local
        folder) and this adapter, through the project's one model loader and title scorer."""

        def load_context(self, context) -> None:
            import pandas as pd  # noqa: PLC0415

            from .core.rank.recommender import LLMScorer  # noqa: PLC0415

            cfg = context.model_config
            priors = None
            if "title_priors" in context.artifacts:  # pmi: each title's log-likelihood without a history
                table = pd.read_parquet(context.artifacts["title_priors"])
                priors = dict(zip(table["asin"], table["prior"].astype(float), strict=True))
            self.scorer = LLMScorer.load(cfg["base_model"], context.artifacts["adapter"], cfg["instruction"],
                                         cfg["evaluation"], int(cfg["batch_size"]), cfg["title_score"], priors, None)

        def predict(self, context, model_input, params=None):
            """`model_input`: columns `history_titles` and `candidate_titles` (lists), and `candidate_asins` where
            titles are scored by pmi; one score list a row."""
            asins = model_input["candidate_asins"].tolist() if "candidate_asins" in model_input else None
            rows = self.scorer.score(model_input["history_titles"].tolist(), model_input["candidate_titles"].tolist(),
                                     asins)
            return [list(map(float, r)) for r in rows]

    return LoRAAdapterModel


class TrackingHooks:
    """kedro-mlflow's hook behind `tracking.enabled`, plus the run's metrics, artifacts and adapter model."""

    def __init__(self) -> None:
        self._context = None
        self._inner = None
        self._saved: set[str] = set()

    @hook_impl
    def after_context_created(self, context) -> None:
        """Keep the context; MLflow is set up only when a pipeline runs with tracking on."""
        self._context, self._inner, self._saved = context, None, set()

    @hook_impl(trylast=True)  # after the project's own checks, so a refused run never opens an MLflow run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Start an MLflow run (kedro-mlflow's) when `tracking.enabled`, on rank 0 only."""
        from .core.llm.training import world  # noqa: PLC0415

        tracking = self._context.params.get("tracking") if self._context is not None else None
        if not tracking or not tracking.get("enabled") or world()[0] != 0 or self._untracked(run_params):
            return
        import mlflow  # noqa: PLC0415
        from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook  # noqa: PLC0415

        inner = MlflowHook()
        inner.after_context_created(_ProjectRelativeMlflow(self._context))
        try:
            inner.before_pipeline_run(run_params, pipeline, catalog)
        except Exception:
            if mlflow.active_run() is not None and not inner._already_active_mlflow:  # noqa: SLF001
                mlflow.end_run("FAILED")
            raise
        if inner._is_mlflow_enabled:  # noqa: SLF001 - kedro-mlflow's own switch (its disable_tracking.pipelines)
            self._inner = inner
            logger.info("Tracking this run in MLflow (%s)", inner.mlflow_config.server.mlflow_tracking_uri)

    def _untracked(self, run_params: dict[str, Any]) -> bool:
        """kedro-mlflow's own rule (mlflow.yml: tracking.disable_tracking.pipelines), read before MLflow is imported:
        a run of only such pipelines (data_processing: counts, no metrics) does not pay MLflow's seconds of start-up."""
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        try:
            disabled = self._context.config_loader["mlflow"]["tracking"]["disable_tracking"]["pipelines"] or []
        except KeyError:
            return False
        if all(name in disabled for name in names):
            logger.info("Not tracked in MLflow: pipeline(s) %s are in mlflow.yml's disable_tracking.pipelines", names)
            return True
        return False

    @hook_impl
    def before_node_run(self, node, catalog, inputs: dict[str, Any], is_async: bool) -> None:
        """Log the node's parameters (kedro-mlflow)."""
        if self._inner is not None:
            self._inner.before_node_run(node, catalog, inputs, is_async)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        """Remember what this run wrote: only that is logged."""
        if self._inner is not None:
            self._saved.add(dataset_name)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Log the run's metrics, artifacts and adapter model, then end the MLflow run."""
        if self._inner is None:
            return
        try:
            self._log_results(catalog)
        finally:
            self._inner.after_pipeline_run(run_params, pipeline, catalog)
            self._inner = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        """Mark the MLflow run failed (kedro-mlflow)."""
        if self._inner is not None:
            self._inner.on_pipeline_error(error, run_params, pipeline, catalog)
            self._inner = None

    def _log_results(self, catalog) -> None:
        import mlflow  # noqa: PLC0415

        saved = self._saved
        load = catalog.load
        values = evaluation_metrics(load("metrics") if "metrics" in saved else None,
                                    load("catalogue_metrics") if "catalogue_metrics" in saved else None)
        if values:
            mlflow.log_metrics(values)
        if "loss_history" in saved:
            history = load("loss_history")
            for split in ("train", "validation"):
                part = history[history["split"] == split]
                for step, loss in zip(part["step"], part["loss"], strict=True):
                    mlflow.log_metric(f"{split}_loss", float(loss), step=int(step))
        for name in ARTIFACTS:
            path = _filepath(catalog, name) if name in saved else None
            if path is not None and path.is_file():
                mlflow.log_artifact(str(path), artifact_path="reporting")
        if "lora_adapter" in saved:
            self._log_adapter(catalog)
        logger.info("MLflow: logged %d metrics and this run's reports", len(values))

    def _log_adapter(self, catalog) -> None:
        import mlflow  # noqa: PLC0415

        params = self._context.params
        adapter = catalog.load("lora_adapter")
        base_name = str((params.get("model") or {}).get("name"))
        base_path = catalog.load("base_model")
        from .core.rank.recommender import llm_source  # noqa: PLC0415

        evaluation = params["evaluation"]
        instruction = llm_source(str(base_path), adapter, params["prompts"], evaluation)["instruction"]
        artifacts = {"adapter": adapter}
        priors = _filepath(catalog, "title_priors")
        if evaluation["title_score"] == "pmi" and priors is not None and priors.is_file():
            artifacts["title_priors"] = str(priors)
        mlflow.pyfunc.log_model(
            name="adapter", python_model=adapter_model_class()(), artifacts=artifacts,
            model_config={"base_model": str(base_path), "instruction": instruction,
                          "batch_size": params["recommend"]["llm_batch_size"],
                          "title_score": evaluation["title_score"],
                          "evaluation": {k: evaluation[k] for k in ("device", "bf16", "quantization")}},
            metadata={"base_model": base_name, "base_model_path": str(base_path), "kind": "LoRA adapter"},
            pip_requirements=["amazon-llm-rec"])
        mlflow.set_tag("base_model", base_name)


def _filepath(catalog, name: str) -> Path | None:
    """Where a file dataset of the catalogue writes (None for a dataset without one)."""
    try:
        dataset = catalog[name]
    except Exception:  # noqa: BLE001 - not in this catalogue
        return None
    path = getattr(dataset, "_filepath", None)
    return None if path is None else Path(str(path))


class _ProjectRelativeMlflow:
    """The Kedro context as kedro-mlflow sees it, with a relative SQLite tracking URI (`sqlite:///mlruns/mlflow.db`)
    made absolute under the project (kedro-mlflow does so for folders, not for database URIs; SQLite would resolve it
    against the working directory), and its folder created."""

    def __init__(self, context) -> None:
        self._context = context
        self.config_loader = _MlflowConf(context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _MlflowConf:
    def __init__(self, context) -> None:
        self._context = context
        self.config_patterns = context.config_loader.config_patterns

    def __getitem__(self, key: str) -> Any:
        conf = self._context.config_loader[key]
        if key != "mlflow":
            return conf
        server = conf.get("server") or {}
        uri = server.get("mlflow_tracking_uri") or ""
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
            db = Path(self._context.project_path) / uri.removeprefix("sqlite:///")
            db.parent.mkdir(parents=True, exist_ok=True)
            conf = {**conf, "server": {**server, "mlflow_tracking_uri": f"sqlite:///{db}"}}
        return conf
