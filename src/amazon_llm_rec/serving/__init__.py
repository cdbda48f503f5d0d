"""The HTTP service: the project's `Recommender` behind FastAPI, with micro-batching and a page to try it.

Start it with `make serve` (or `python -m amazon_llm_rec.serving`). It reads the model, the adapter version
and the catalogue through the project's Kedro configuration; it never imports a pipeline module."""
