"""`python -m amazon_llm_rec.serving [--env ENV] [--host H] [--port P] [--insecure]`: start the service with uvicorn.

Without an API key (AMAZON_LLM_REC_API_KEY, or serving_api_key in conf/local/credentials.yml) it binds only a
loopback address; `--insecure` allows another, with a warning. SIGTERM drains: requests in flight finish (at most
serving.shutdown_grace_s), new ones get 503."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("amazon_llm_rec.serving")


def build_app(project: str | Path = ".", env: str | None = None, params: dict[str, Any] | None = None):
    """Read the project's configuration through Kedro; return (app, settings). The data and the model load in the
    background once the app starts (and again on /admin/reload, which picks up the latest adapter version)."""
    from .app import create_app  # noqa: PLC0415
    from .config import load_project, project_settings  # noqa: PLC0415
    from .service import RecommenderService  # noqa: PLC0415

    settings = project_settings(project, env, params)
    return create_app(settings, lambda: RecommenderService(load_project(project, env, params), settings)), settings


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


def check_exposure(host: str, keyed: bool, insecure: bool) -> str | None:
    """An error message when `host` is not loopback and there is no key (unless `insecure`), else None."""
    from .config import is_loopback  # noqa: PLC0415

    if is_loopback(host) or keyed:
        return None
    if insecure:
        logger.warning("serving on %s WITHOUT an API key (--insecure): anyone who can reach it can use it", host)
        return None
    return (f"refusing to serve on {host} without an API key: export AMAZON_LLM_REC_API_KEY (or set serving_api_key "
            "in conf/local/credentials.yml), bind 127.0.0.1, or pass --insecure to accept the risk")


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run uvicorn."""
    import uvicorn  # noqa: PLC0415

    from .observability import configure_logging  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m amazon_llm_rec.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=os.getcwd(), help="the Kedro project's root (default: here)")
    parser.add_argument("--env", default=None, help="Kedro environment, e.g. industrial")
    parser.add_argument("--host", default=None, help="default: serving.host (127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default: serving.port (8000)")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback host without an API key")
    parser.add_argument("--log-format", choices=("json", "text"), default="json", help="log lines (default: json)")
    parser.add_argument("--params", nargs="*", default=[], help="runtime parameters, e.g. recommend.ranker=fusion_no_llm")
    args = parser.parse_args(argv)
    configure_logging(args.log_format)
    app, settings = build_app(args.project, args.env, _params(args.params))
    host = args.host or settings.host
    problem = check_exposure(host, bool(settings.api_key), args.insecure)
    if problem:
        logger.error(problem)
        sys.exit(2)
    state = app.state.serving

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # noqa: D102 - new requests get 503 from the first signal
            state["draining"] = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=args.port if args.port is not None else settings.port,
                            log_config=None, access_log=False, timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s))
    Server(config).run()


if __name__ == "__main__":
    main()
