"""Nodes of the download pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...core.data.download import DownloadConfig, fetch
from ...core.errors import ConfigError

logger = logging.getLogger(__name__)


def download_raw(raw: dict[str, Any], download: dict[str, Any]) -> dict[str, Any]:
    """Fetch the review and metadata files of `raw.category` (one or a list) into `raw.data_dir`."""
    cfg = DownloadConfig.from_params(download)
    categories = raw["category"] if isinstance(raw["category"], list) else [raw["category"]]
    synthetic = (raw.get("synthetic") or {}).get("category")
    if synthetic in categories:
        raise ConfigError(f"raw.category {synthetic!r} is the embedded synthetic demo: nothing to download. "
                          "Name a real category: kedro run --pipeline=download --params raw.category=<Category>")
    files = []
    for category in categories:
        for template in (raw["reviews_file"], raw["meta_file"]):
            name = template.format(category=category)
            kind = "meta" if name.startswith("meta_") else "reviews_5" if "_5." in name else "reviews"
            files.append(fetch(cfg.url(kind, name), Path(raw["data_dir"]) / name, cfg))
    logger.info("download: %s", ", ".join(f"{Path(f['path']).name} {f['status']}" for f in files))
    return {"base_url": cfg.base_url, "files": files}
