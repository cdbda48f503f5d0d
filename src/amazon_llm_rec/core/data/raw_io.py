"""Open Amazon Review 2018 JSON-lines files as Ibis tables on DuckDB or PySpark, never whole into pandas.

DuckDB reads each file as one text column a line and parses it with its JSON functions; Spark's JSON
reader keeps malformed lines as corrupt records. Either way malformed lines are counted (and located
on demand) instead of aborting the scan, and only the fields the project uses are extracted. Metadata
files published as Python literals are converted to JSON lines first, streaming.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RawDataError

logger = logging.getLogger(__name__)

HOW_TO_GET = (
    "Download the Amazon Review 2018 per-category files from "
    "https://nijianmo.github.io/amazon/index.html (reviews '<Category>_5.json.gz' or "
    "'<Category>.json.gz' and metadata 'meta_<Category>.json.gz') into that folder, point "
    "parameters 'raw.data_dir' and 'raw.category' at them, or set 'raw.synthetic_if_missing: true' "
    "to generate the embedded synthetic category."
)


@dataclass(frozen=True)
class RawFile:
    """Handle on one raw JSON-lines file (gzip or plain)."""

    path: str

    @property
    def exists(self) -> bool:
        """Whether the file is on disk."""
        return Path(self.path).is_file()

    def require(self) -> None:
        """Raise a RawDataError naming the path and how to get the data when it is missing."""
        if not self.exists:
            raise RawDataError(f"Raw file not found: {self.path}. {HOW_TO_GET}")


def _open_text(path: str):
    if _is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")  # noqa: SIM115


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def write_json_lines(records: Iterable[dict[str, Any]], path: str) -> int:
    """Write records as JSON lines (gzip when the name ends in .gz), atomically; return the count."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    count = 0
    try:
        opener = gzip.open if target.name.endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as fh:
            for rec in records:
                fh.write(rec if isinstance(rec, str) else json.dumps(rec, ensure_ascii=False))
                fh.write("\n")
                count += 1
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return count


def _parse_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return ast.literal_eval(line)


def detect_python_literals(path: str, sample: int = 20) -> bool:
    """Return True when the file's first lines are Python literals rather than JSON."""
    seen = 0
    try:
        with _open_text(path) as fh:
            for raw in fh:
                line = raw.strip()
                if not line:
                    continue
                seen += 1
                try:
                    json.loads(line)
                    return False
                except ValueError:
                    try:
                        ast.literal_eval(line)
                        return True
                    except (ValueError, SyntaxError):
                        pass
                if seen >= sample:
                    break
    except (OSError, EOFError) as exc:
        raise RawDataError(f"{path}: cannot be read ({exc}); the file may be truncated or not gzip.") from exc
    return False


def _literal_lines_to_json(path: str) -> Iterator[str]:
    with _open_text(path) as fh:
        for line in fh:
            stripped = line.strip()
            if not stripped:
                continue
            try:
                yield json.dumps(_parse_line(stripped), default=str)
            except (ValueError, SyntaxError):
                yield stripped  # left malformed on purpose: counted as a bad line downstream


def first_bad_line(path: str) -> tuple[int, str] | None:
    """Return (1-based line number, excerpt) of the first line that is neither JSON nor a literal."""
    with _open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            try:
                value = _parse_line(stripped)
            except (ValueError, SyntaxError):
                return number, stripped[:120]
            if not isinstance(value, dict):
                return number, stripped[:120]
    return None


# Output column -> (JSON field, type) of what the project reads from each file
REVIEW_FIELDS: dict[str, tuple[str, str]] = {
    "reviewer_id": ("reviewerID", "string"),
    "asin": ("asin", "string"),
    "unix_time": ("unixReviewTime", "int64"),
    "verified": ("verified", "boolean"),
}
META_FIELDS: dict[str, tuple[str, str]] = {
    "asin": ("asin", "string"),
    "title": ("title", "string"),
    "brand": ("brand", "string"),
    "categories": ("category", "array<string>"),
}
# longest line read (the 2018 metadata's longest lines hold long descriptions); DuckDB's read buffer is 4x it, so
# this bounds memory too (its default buffer of 16x a 64 MiB limit asked for a 1 GiB block at 5M reviews)
MAX_LINE_BYTES = 8 * 1024 * 1024
_SPARK_TYPES = {"string": "STRING", "int64": "BIGINT", "boolean": "BOOLEAN", "array<string>": "ARRAY<STRING>"}


def open_raw(con, path: str, fields: dict[str, tuple[str, str]], line_numbers: bool = False):
    """An Ibis table of a raw JSON-lines file on backend `con` (DuckDB or PySpark): one row a non-blank
    line, the columns of `fields` (NULL where absent or of another type) and `_bad` (the line is not JSON);
    with `line_numbers`, also `_line`, increasing in file order (not necessarily consecutive).

    Lazy: the file is scanned when the table is executed. Python-literal files are first converted to
    JSON lines in a folder that lives as long as the process."""
    from .engine import engine_name, scratch_dir  # noqa: PLC0415

    RawFile(path).require()
    source = path
    if detect_python_literals(path):
        logger.info("%s holds Python-literal lines: converting to JSON lines (streaming)", path)
        source = str(Path(tempfile.mkdtemp(dir=scratch_dir())) / "converted.json.gz")
        write_json_lines(_literal_lines_to_json(path), source)
    try:
        if engine_name(con) == "pyspark":
            return _spark_rows(con, source, fields, line_numbers)
        return _duckdb_rows(con, source, path, fields, line_numbers)
    except (RawDataError, ConfigError):
        raise
    except Exception as exc:  # the engines raise several types for broken gzip/encoding
        raise RawDataError(
            f"{path}: cannot be read as JSON lines ({type(exc).__name__}: {exc}). "
            "The file may be truncated or corrupt: download it again."
        ) from exc


def _duckdb_rows(con, source: str, path: str, fields: dict[str, tuple[str, str]], line_numbers: bool):
    # One SQL query, DuckDB's own: every line parsed as JSON once, and the fields taken with one json_extract
    # (Ibis's per-field accessors re-parse the line for each field: 9 parses a line, 5x slower at 1M reviews).
    quoted = source.replace("'", "''")
    rejects = _rejects_name(path)
    reader = (
        f"read_csv('{quoted}', columns={{'line': 'VARCHAR'}}, delim='\\x01', quote='', escape='', header=false, "
        f"auto_detect=false, max_line_size={MAX_LINE_BYTES}, buffer_size={4 * MAX_LINE_BYTES}, "
        f"compression='{'gzip' if _is_gzip(source) else 'none'}', "
        # a line DuckDB cannot read (invalid UTF-8, say) is skipped and recorded, then counted as bad
        f"ignore_errors=true, store_rejects=true, rejects_table='{rejects}', rejects_scan='{rejects}_scan')"
    )
    take = {
        "string": "CASE WHEN json_type({v}) = 'VARCHAR' THEN {v} ->> '$' END",
        "int64": "CASE WHEN json_type({v}) IN ('UBIGINT', 'BIGINT') THEN CAST({v} AS BIGINT) END",
        "boolean": "CASE WHEN json_type({v}) = 'BOOLEAN' THEN CAST({v} AS BOOLEAN) END",
        "array<string>": "TRY_CAST({v} AS VARCHAR[])",
    }
    paths = ", ".join(f"'$.{key}'" for key, _ in fields.values())
    columns = ", ".join(f"{take[kind].format(v=f'v[{i + 1}]')} AS \"{out}\""
                        for i, (out, (_, kind)) in enumerate(fields.items()))
    if line_numbers:  # row_number() OVER () follows the file only while DuckDB keeps rows in insertion order
        kept = con.raw_sql("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
        if str(kept).lower() not in {"true", "1"}:
            raise ConfigError(f"{path}: metadata rows are read in file order (the first usable title wins), which "
                              "needs raw.engines.duckdb.preserve_insertion_order: true (or unset)")
    line = ", _line" if line_numbers else ""
    numbered = ", row_number() OVER () AS _line" if line_numbers else ""  # a gzip file is read in order, by one thread
    sql = (
        f"SELECT {columns}, j IS NULL AS _bad{line} FROM ("
        f"SELECT j, json_extract(j, [{paths}]) AS v{line} FROM ("
        f"SELECT TRY_CAST(line AS JSON) AS j{numbered} FROM {reader} WHERE length(trim(line)) > 0))"
    )
    view = f"{rejects}_rows"
    con.raw_sql(f"CREATE OR REPLACE TEMP VIEW {view} AS {sql}")
    return con.table(view)


def _spark_rows(con, source: str, fields: dict[str, tuple[str, str]], line_numbers: bool):
    schema = ", ".join(f"`{key}` {_SPARK_TYPES[kind]}" for key, kind in fields.values())
    t = con.read_json(
        source,
        schema=schema + ", `_corrupt_record` STRING",
        mode="PERMISSIVE",
        columnNameOfCorruptRecord="_corrupt_record",
    )
    columns = {out: t[key] for out, (key, _) in fields.items()}
    if line_numbers:  # increasing in file order: partitions follow the file, rows their order within it
        columns["_line"] = _monotonically_increasing_id()
    return t.select(**columns, _bad=t._corrupt_record.notnull())


def _monotonically_increasing_id():
    import ibis  # noqa: PLC0415

    @ibis.udf.scalar.builtin(name="monotonically_increasing_id")
    def spark_row_id() -> int:
        """Spark's own row id."""

    return spark_row_id()


def _rejects_name(path: str) -> str:
    import hashlib  # noqa: PLC0415

    return "rejects_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _rejected(backend, path: str) -> tuple[int, int | None, str]:
    """(count, first line number, error type) of the lines DuckDB's reader rejected in the last scan of `path`."""
    from .engine import engine_name  # noqa: PLC0415

    if engine_name(backend) != "duckdb":
        return 0, None, ""  # Spark's reader keeps such lines as corrupt records: counted by `_bad`
    try:
        row = backend.raw_sql(
            f"SELECT count(*), min(line), any_value(error_type) FROM {_rejects_name(path)}").fetchall()[0]
    except Exception:  # noqa: BLE001 - no rejects table: nothing was rejected
        return 0, None, ""
    return int(row[0] or 0), (int(row[1]) if row[1] is not None else None), str(row[2] or "")


def line_stats(table) -> dict[str, Any]:
    """Aggregates of an `open_raw` table: `rows` and `bad` (more can be added by the caller)."""
    first = next(c for c in table.columns if c != "_bad")
    # Spark refuses a query that reads only its corrupt-record column: `seen` reads another one
    return {"rows": table.count(), "bad": table._bad.sum(), "seen": table[first].count()}


def report_bad_lines(backend, path: str, rows: int, bad: int, on_bad_lines: str) -> tuple[int, int]:
    """Add the lines the reader rejected to (rows, bad) and warn, or raise naming file and line ('error')."""
    if on_bad_lines not in {"warn", "skip", "error"}:
        raise ValueError(f"on_bad_lines must be 'warn', 'skip' or 'error', got {on_bad_lines!r}")
    rejected, reject_line, reject_type = _rejected(backend, path)
    parsed_bad = int(bad or 0)
    rows, bad = int(rows) + rejected, parsed_bad + rejected
    if bad:
        if on_bad_lines == "error":
            where = first_bad_line(path) if parsed_bad else None
            if reject_line is not None and (where is None or reject_line < where[0]):
                where = (reject_line, f"unreadable line ({reject_type.lower() or 'rejected by the reader'})")
            line = f"line {where[0]}: {where[1]!r}" if where else "a line"
            raise RawDataError(
                f"{path}: malformed JSON at {line} ({bad} bad line(s) in all). "
                "Fix the file or set 'raw.on_bad_lines: warn' to skip them."
            )
        if on_bad_lines == "warn":
            logger.warning("%s: skipped %d malformed line(s) of %d", path, bad, rows)
    return rows, bad


def fetch_rows(expr, what: str) -> list[dict[str, Any]]:
    """Run a query that scans raw file(s) and return its rows, naming `what` (the file) when the scan fails."""
    try:
        return expr.to_pyarrow().to_pylist()
    except Exception as exc:  # noqa: BLE001 - DuckDB and Spark raise several types for broken gzip/encoding
        raise RawDataError(
            f"{what}: cannot be read as JSON lines ({type(exc).__name__}: {exc}). "
            "The file may be truncated or corrupt: download it again."
        ) from exc
