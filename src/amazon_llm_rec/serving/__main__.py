"""`python -m amazon_llm_rec.serving [--env ENV] [--host H] [--port P]`: start the service with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any


def build_app(project: str | Path = ".", env: str | None = None, params: dict[str, Any] | None = None):
    """Read the project's configuration and data through Kedro; return (app, settings)."""
    from .app import create_app  # noqa: PLC0415
    from .config import ServingSettings, load_project  # noqa: PLC0415
    from .service import RecommenderService  # noqa: PLC0415

    data = load_project(project, env, params)
    settings = ServingSettings.from_params(data.params.get("serving"), data.credentials)
    return create_app(settings, lambda: RecommenderService(data, settings)), settings


def _params(pairs: list[str]) -> dict[str, Any]:
    """`a.b=1` pairs -> nested runtime parameters (values read as YAML)."""
    import yaml  # noqa: PLC0415

    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run uvicorn."""
    import uvicorn  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m amazon_llm_rec.serving", description=__doc__)
    parser.add_argument("--project", default=os.getcwd(), help="the Kedro project's root (default: here)")
    parser.add_argument("--env", default=None, help="Kedro environment, e.g. industrial")
    parser.add_argument("--host", default=None, help="default: serving.host (127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default: serving.port (8000)")
    parser.add_argument("--params", nargs="*", default=[], help="runtime parameters, e.g. recommend.ranker=fusion_no_llm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, settings = build_app(args.project, args.env, _params(args.params))
    uvicorn.run(app, host=args.host or settings.host, port=args.port or settings.port, log_level="info")


if __name__ == "__main__":
    main()
