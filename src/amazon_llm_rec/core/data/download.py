"""Fetch raw files over HTTP: streamed, resumed with Range, retried with backoff, checked, renamed into place.

A file is streamed into `<partial_dir>/<name>.part` (outside the raw folder). A broken or stalled transfer is
retried after `backoff * 2**attempt` seconds, resuming from the bytes already there when the server honours
`Range`. When the transfer is complete, its size is checked against the server's (Content-Length or
Content-Range), a `.gz` file is read through to check its gzip stream, and only then is it moved into the raw
folder with an atomic rename. So the raw folder never holds a half-written file, and a file there is complete:
the next run skips it. An HTTP error that retrying cannot fix (4xx) stops at once, naming the URL and status.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AmazonLLMRecError, ConfigError

logger = logging.getLogger(__name__)

# Amazon Review 2018 (https://nijianmo.github.io/amazon/index.html): where each kind of file lies under the base URL
DEFAULT_PATHS = {
    "reviews_5": "categoryFilesSmall/{file}",   # <Category>_5.json.gz (5-core)
    "reviews": "categoryFiles/{file}",          # <Category>.json.gz (all reviews)
    "meta": "metaFiles2/{file}",                # meta_<Category>.json.gz
}


class DownloadError(AmazonLLMRecError):
    """A file could not be fetched; the message names the URL and the HTTP status or error."""


@dataclass
class DownloadConfig:
    """`params:download`, checked once."""

    base_url: str
    paths: dict[str, str]
    partial_dir: str = "data/.downloads"
    retries: int = 5
    backoff_seconds: float = 2.0
    timeout_seconds: float = 60.0
    progress: bool = True

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> DownloadConfig:
        """Build from `params:download`, naming the parameter at fault."""
        params = dict(params or {})
        if not params.get("base_url"):
            raise ConfigError("download.base_url is missing: the URL under which the Amazon Review 2018 files lie")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(f"download: unknown parameter(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**{**params, "paths": {**DEFAULT_PATHS, **(params.get("paths") or {})}})
        if cfg.retries < 0 or cfg.backoff_seconds < 0 or cfg.timeout_seconds <= 0:
            raise ConfigError("download: retries and backoff_seconds must be >= 0, timeout_seconds > 0")
        return cfg

    def url(self, kind: str, name: str) -> str:
        """The URL of file `name` of kind `reviews_5`, `reviews` or `meta`."""
        if kind not in self.paths:
            raise ConfigError(f"download.paths has no entry {kind!r} (has {sorted(self.paths)})")
        return self.base_url.rstrip("/") + "/" + self.paths[kind].format(file=name).lstrip("/")


class _Retryable(Exception):
    pass


def _check_gzip(path: Path, url: str) -> None:
    """Read the whole gzip stream: a truncated or corrupt file fails its CRC or ends early."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DownloadError(f"{url}: the downloaded file is not a complete gzip file ({exc})") from exc


def _move_into_place(part: Path, dest: Path) -> None:
    """Atomic rename into the raw folder; across file systems, copy next to `dest` first, then rename."""
    import shutil  # noqa: PLC0415

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(part, dest)
    except OSError:
        tmp = dest.with_name(f".{dest.name}.incoming")
        try:
            shutil.copyfile(part, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        part.unlink(missing_ok=True)


def _attempt(url: str, part: Path, cfg: DownloadConfig, desc: str) -> tuple[int | None, bool]:
    """One GET into `part`, resuming with Range from its bytes; return (the file's total size if known, resumed)."""
    import httpx  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with httpx.stream("GET", url, headers=headers, timeout=cfg.timeout_seconds, follow_redirects=True) as r:
        if r.status_code >= 500 or r.status_code in (408, 429):  # noqa: PLR2004
            raise _Retryable(f"HTTP {r.status_code}")
        if r.status_code == 416 and have:  # noqa: PLR2004 - nothing after our bytes: the part is whole (checked next)
            return None, True
        if r.status_code >= 400:  # noqa: PLR2004
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason_phrase}")
        resumed = bool(have) and r.status_code == 206  # noqa: PLR2004
        if resumed:
            whole = r.headers.get("content-range", "").rsplit("/", 1)[-1]
            total = int(whole) if whole.isdigit() else None
        else:  # a fresh transfer, or a server that ignores Range: start again
            have = 0
            total = int(r.headers["content-length"]) if "content-length" in r.headers else None
        with open(part, "ab" if resumed else "wb") as fh, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                               desc=desc, disable=not cfg.progress, leave=False) as bar:
            for chunk in r.iter_bytes():  # as received, so a broken transfer keeps every byte it got
                fh.write(chunk)
                bar.update(len(chunk))
    return total, resumed


def fetch(url: str, dest: str | Path, cfg: DownloadConfig) -> dict[str, Any]:
    """Fetch `url` into `dest` (skipped when `dest` exists); return what happened."""
    import httpx  # noqa: PLC0415

    dest = Path(dest)
    if dest.is_file():
        logger.info("%s is already complete: skipped", dest)
        return {"url": url, "path": str(dest), "status": "skipped", "bytes": dest.stat().st_size}
    part = Path(cfg.partial_dir) / (dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    attempts = resumes = 0
    start = time.perf_counter()
    while True:
        try:
            total, resumed = _attempt(url, part, cfg, dest.name)
            resumes += resumed
            size = part.stat().st_size
            if total is not None and size < total:
                raise _Retryable(f"connection closed at {size} of {total} bytes")
            if total is not None and size > total:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: got {size} bytes, more than the {total} the server announced")
            break
        except (_Retryable, httpx.TransportError) as exc:
            attempts += 1
            if attempts > cfg.retries:
                raise DownloadError(f"{url}: failed after {attempts} attempts ({type(exc).__name__}: {exc}); "
                                    f"{part} is kept, so the next run resumes from it") from exc
            wait = cfg.backoff_seconds * 2 ** (attempts - 1)
            logger.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", url, exc, wait, attempts + 1,
                           cfg.retries + 1)
            time.sleep(wait)
    if dest.name.endswith(".gz"):
        try:
            _check_gzip(part, url)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
    _move_into_place(part, dest)
    seconds = time.perf_counter() - start
    logger.info("Downloaded %s (%d bytes, %d resume(s), %d retry(ies)) in %.1f s", dest, dest.stat().st_size, resumes,
                attempts, seconds)
    return {"url": url, "path": str(dest), "status": "downloaded", "bytes": dest.stat().st_size,
            "resumed": resumes, "retries": attempts, "seconds": round(seconds, 2)}
