"""The download pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import download_raw


def create_pipeline(**kwargs) -> Pipeline:
    """`raw.category` -> its review and metadata files in `raw.data_dir`, fetched, checked and renamed into place."""
    return Pipeline([Node(download_raw, ["params:raw", "params:download"], "download_report", name="download_raw")])
