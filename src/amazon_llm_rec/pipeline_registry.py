"""Project pipelines."""
from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    # `kedro run` is the study end to end; `download` and `recommend` (deployment: every reviewer) run on their own
    pipelines["__default__"] = sum(p for name, p in pipelines.items() if name not in {"download", "recommend"})
    return pipelines
