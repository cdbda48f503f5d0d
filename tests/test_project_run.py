"""The whole project end to end: all four pipelines with a tiny random Llama in a fresh project copy,
the notebook on its results, kedro-viz, and the message when a pipeline's inputs are missing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import base_params, copy_project, kedro_session, require


def _session(project, env=None, extra=None):
    return kedro_session(project, env, extra)


@pytest.mark.slow
def test_all_four_pipelines_write_their_outputs(ran_project):
    data = ran_project / "data"
    assert (data / "01_raw" / "Synthetic_Industrial_Demo_5.json.gz").is_file()
    counts = json.loads((data / "08_reporting" / "data_processing_counts.json").read_text())
    assert counts["review_bad_lines"] == 2 and counts["reviews_unverified"] > 0 and counts["reviewers_short_history"] > 0
    test = pd.read_parquet(data / "05_model_input" / "test_prompts.parquet")
    assert len(test) == 16 and {"reviewer_id", "target_asin", "candidate_asins", "correct_letter"} <= set(test.columns)
    versions = list((data / "06_models" / "lora_adapter").iterdir())
    assert len(versions) == 1 and (versions[0] / "lora_adapter" / "adapter_model.safetensors").is_file()
    metrics = json.loads((data / "08_reporting" / "metrics.json").read_text())
    methods = {"random", "popularity", "cooccurrence", "bm25", "embedding", "sasrec", "zero_shot", "fine_tuned",
               "fusion", "fusion_no_llm"}
    assert set(metrics["methods"]) == methods
    assert metrics["training"]["steps"] == 3 and metrics["test_prompts"] == 16
    protocols = metrics["protocols"]
    assert list(protocols) == ["uniform_4", "uniform_20", "popularity_4", "retrieved_20"]
    assert all(set(p["methods"]) == methods for p in protocols.values())
    assert all(p["test_prompts"] == 16 for n, p in protocols.items() if n != "retrieved_20")
    assert protocols["uniform_20"]["num_options"] == 20 and "hr@10" in protocols["uniform_20"]["methods"]["sasrec"]
    # LlamaRec's protocol: the test windows whose target the retriever's top 20 holds, counted in the report
    retrieved = protocols["retrieved_20"]
    assert retrieved["eligible_windows"] == 16 and 0 < retrieved["qualifying_windows"] == retrieved["test_prompts"] <= 16
    assert retrieved["num_options"] == 20
    report = (data / "08_reporting" / "report.md").read_text()
    for part in ("## uniform_20: 16 test prompts, 20 candidates each", "## Where the fine-tuned model wins",
                 "## Split leakage", "| paper_random |", "![loss curves](loss_curves.png)",
                 f"retrieved_20: {retrieved['qualifying_windows']} of 16 windows"):
        assert part in report
    # the default recommended method is the fusion without the LLM (the LLM's measured gain did not clear 0)
    assert "## The recommended method (`fusion_no_llm`) against every other method, paired" in report
    summary = json.loads((data / "08_reporting" / "summary.json").read_text())
    assert summary["dataset"] == "Synthetic_Industrial_Demo" and list(summary["protocols"]) == list(protocols)
    assert set(summary["protocols"]["uniform_20"]["vs"]) == methods - {"fusion_no_llm"}
    # what fine-tuning taught, and the LLM re-ranker over the whole catalogue, each paired
    assert all(set(p["fine_tuned_vs_zero_shot"]) == {"diff", "lo", "hi"} for p in summary["protocols"].values())
    assert summary["catalogue"]["method"] == "fusion" and summary["catalogue"]["reviewers"] == 10
    assert set(summary["catalogue"]["vs_fusion_no_llm"]) == {"diff", "lo", "hi"}
    fitted = json.loads((data / "06_models" / "fusion_model.json").read_text())
    assert fitted["fusion"]["features"][0] == "llm" and fitted["fusion"]["windows"] == 4
    assert json.loads((data / "08_reporting" / "merged_export_check.json").read_text())["exported"] is True
    assert (data / "06_models" / "merged_model" / "config.json").is_file()
    catalogue = json.loads((data / "08_reporting" / "catalogue_metrics.json").read_text())
    assert catalogue["reviewers"] == 10 and catalogue["ranker"] == "fusion_no_llm" and catalogue["num_candidates"] == 50  # max_reviewers
    assert {"retriever", "fusion", "fusion_no_llm", "cooccurrence", "popularity", "sasrec"} == set(catalogue["methods"])
    assert set(catalogue["paired"]) == set(catalogue["methods"]) - {"fusion_no_llm"}
    assert set(catalogue["fusion_vs_fusion_no_llm"]) == {"recall@10", "ndcg@10", "mrr@10"}
    # 10 reviewers: a share of them, found for some (the demo's co-purchase chains), inside its own interval, and a cap
    # on the two-stage methods that re-rank those 50
    recall = catalogue["retriever_recall@50"]
    assert recall * 10 == pytest.approx(round(recall * 10)) and 0 < recall
    assert catalogue["retriever_recall@50_ci95"][0] <= recall <= catalogue["retriever_recall@50_ci95"][1]
    assert all(catalogue["methods"][m]["recall@10"] <= recall for m in ("fusion", "fusion_no_llm", "retriever"))
    assert "## Whole catalogue: two-stage recommendation" in report
    for f in ("metrics.md", "metrics.png", "loss_curves.png", "error_analysis.csv", "position_bias.png", "split_leakage.json"):
        assert (data / "08_reporting" / f).stat().st_size > 0
    history = pd.read_parquet(data / "07_model_output" / "loss_history.parquet")
    assert set(history["split"]) == {"train", "validation", "train_epoch_mean"}


@pytest.mark.slow
def test_notebook_loads_catalog_datasets(ran_project):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ran_project / "notebooks" / "explore_results.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ran_project / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "reviewers" in text and "Purchase history:" in text


@pytest.mark.slow
def test_kedro_viz_builds_headless(ran_project):
    require("kedro_viz", "the optional extra '.[viz]'")
    kedro = Path(sys.executable).with_name("kedro")  # the venv's, also when it is not on PATH
    out = subprocess.run([str(kedro if kedro.exists() else shutil.which("kedro")), "viz", "build"], cwd=ran_project, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    pipelines = json.loads((ran_project / "build" / "api" / "main").read_text())
    names = {n["name"] for n in pipelines["nodes"]}
    assert {"fine_tune", "score_llms", "read_reviews", "render_prompts"} <= names


def test_a_pipeline_without_its_inputs_says_which_pipeline_to_run_first(tmp_path, monkeypatch):
    from amazon_llm_rec.core.errors import MissingInputError

    project = copy_project(tmp_path)
    monkeypatch.chdir(project)
    with _session(project) as session, pytest.raises(MissingInputError) as err:
        session.run(pipeline_names=["fine_tuning"])
    assert "train_prompts" in str(err.value) and "kedro run --pipeline=prompt_engineering" in str(err.value)
    assert not (project / "mlruns").exists(), "a refused run opened an MLflow run"


def test_tracking_writes_under_the_project_from_any_directory_and_is_off_with_one_setting(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    project = copy_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with _session(project, extra={"tracking": {"enabled": False}}) as session:
        assert not any(type(h).__name__ == "MlflowHook" for h in session._hook_manager.get_plugins())
        session.run(pipeline_names=["data_processing", "prompt_engineering"])  # tracked but for the setting
    assert not (project / "mlruns").exists() and not (elsewhere / "mlruns").exists()
    with _session(project) as session:
        session.run(pipeline_names=["data_processing"])  # in mlflow.yml's disable_tracking.pipelines
    assert not (project / "mlruns").exists(), "data_processing is not tracked"
    with _session(project) as session:
        session.run(pipeline_names=["prompt_engineering"])
    assert mlflow.active_run() is None and not (elsewhere / "mlruns").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("amazon_llm_rec").experiment_id])
    history = str(base_params("prompts")["history_size"])
    assert run.info.status == "FINISHED" and run.data.params["prompts.history_size"] == history
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(project / "mlruns")


def test_gpu_and_paper_environments_override_single_keys(tmp_path, monkeypatch):
    project = copy_project(tmp_path)
    monkeypatch.chdir(project)
    with _session(project, env="gpu") as session:
        p = session.load_context().params
    assert p["fine_tuning"]["backend"] == "unsloth" and p["model"]["name"].startswith("TinyLlama/")
    assert p["fine_tuning"]["lora"]["r"] == 16  # kept from base
    with _session(project, env="paper") as session:
        p = session.load_context().params
    ft = p["fine_tuning"]
    assert (ft["batch_size"], ft["learning_rate"], ft["weight_decay"], ft["epochs"]) == (8, 1e-3, 1e-3, 5)
    assert p["prompts"]["split"] == "paper_random" and p["prompts"]["num_negatives"] == 3


@pytest.mark.slow
def test_the_default_run_is_tracked_in_mlflow(ran_project, tiny_llama):
    """`tracking.enabled` (on in conf/base): the default run, read back through MLflow's API from the local mlruns/."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{ran_project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("amazon_llm_rec")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["fine_tuning.max_steps"] == "3" and params["evaluation.fusion.l2"] == str(
        base_params("evaluation")["fusion"]["l2"])
    metrics = json.loads((ran_project / "data" / "08_reporting" / "metrics.json").read_text())
    for protocol, entry in metrics["protocols"].items():
        for method in ("fine_tuned", "fusion", "fusion_no_llm", "sasrec"):
            m = entry["methods"][method]
            assert run.data.metrics[f"{protocol}/{method}/hr1"] == pytest.approx(m["accuracy"])
            assert run.data.metrics[f"{protocol}/{method}/mrr"] == pytest.approx(m["mrr"])
            lo, hi = m["ci95"]["accuracy"]
            assert run.data.metrics[f"{protocol}/{method}/hr1_lo"] == pytest.approx(lo)
            assert run.data.metrics[f"{protocol}/{method}/hr1_hi"] == pytest.approx(hi)
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    history = pd.read_parquet(ran_project / "data" / "07_model_output" / "loss_history.parquet")
    train = history[history["split"] == "train"]
    assert [m.step for m in losses] == train["step"].tolist()
    assert [m.value for m in losses] == pytest.approx(train["loss"].tolist())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reporting")}
    assert {"reporting/report.md", "reporting/metrics.png", "reporting/loss_curves.png"} <= artifacts
    local = client.download_artifacts(run.info.run_id, "reporting/report.md", str(ran_project / "build"))
    assert Path(local).read_text() == (ran_project / "data" / "08_reporting" / "report.md").read_text()
    mlflow.set_tracking_uri(uri)
    (model,) = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert model.name == "adapter" and model.source_run_id == run.info.run_id
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert info.metadata["base_model"] == tiny_llama and info.metadata["kind"] == "LoRA adapter"
