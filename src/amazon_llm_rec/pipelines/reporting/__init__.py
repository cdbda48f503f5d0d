"""Renders the evaluation: report.md, summary.json, plots and the error analysis."""

# create_pipeline is imported lazily so that the nodes can be used (on a GPU machine, say)
# without Kedro's pipeline machinery being imported.


def __getattr__(name: str):
    if name == "create_pipeline":
        from .pipeline import create_pipeline

        return create_pipeline
    raise AttributeError(name)


__all__ = ["create_pipeline"]
