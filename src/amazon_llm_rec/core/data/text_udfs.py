"""Title cleaning inside the data engine: `core.data.text`'s Arrow kernels as Ibis pyarrow UDFs.

DuckDB runs them as pyarrow UDFs on its Arrow batches; PySpark as pandas UDFs (Arrow-batched: each batch is converted
to Arrow arrays for the kernels), because its pyarrow UDFs are called row by row. Either way the metadata rows stream
through the engine and only the cleaned tables are written: no product-sized table is held whole in pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .text import as_array

if TYPE_CHECKING:
    import ibis.expr.types as ir


def _labels_by_row(categories):
    """Each label of each category list, cleaned (`leaf_category` of it), with its row number."""
    import pyarrow.compute as pc  # noqa: PLC0415

    from .text import leaf_labels_arrow  # noqa: PLC0415

    rows = pc.list_parent_indices(categories).to_numpy(zero_copy_only=False)
    return leaf_labels_arrow(pc.list_flatten(categories)), rows


def category_paths_arrow(categories):
    """Each category list's labels cleaned (`leaf_category` of each) and joined by " > "; "" for none."""
    from .text import join_per_row  # noqa: PLC0415

    categories = as_array(categories)
    labels, rows = _labels_by_row(categories)
    return join_per_row(rows, labels, len(categories), sep=" > ")


def backup_titles_arrow(brands, categories, mode: str, max_words: int):
    """`clean_title("<brand> <leaf category>")` of each row: the title used when no metadata row has a usable one."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    from .text import clean_titles_arrow, join_per_row  # noqa: PLC0415

    categories = as_array(categories)
    labels, rows = _labels_by_row(categories)
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = rows[1:] != rows[:-1]  # the last label of each row
    leaf = join_per_row(rows[last], labels.filter(pa.array(last)), len(categories))
    joined = pc.binary_join_element_wise(pc.fill_null(pc.cast(as_array(brands), pa.string()), ""), leaf, " ")
    return clean_titles_arrow(joined, mode, max_words)


def _engine_udf(backend_name: str, name: str, signature: tuple, fn):
    """`fn` (one or two Arrow arrays in, an Arrow array out) as an Ibis UDF that the engine runs on batches: a pyarrow
    UDF on DuckDB, a pandas (Arrow-batched) UDF on PySpark, whose pyarrow UDFs are called row by row."""
    import ibis  # noqa: PLC0415

    types = signature[0]
    if backend_name == "pyspark":
        def call(*series):
            import pandas as pd  # noqa: PLC0415
            import pyarrow as pa  # noqa: PLC0415

            arrays = [pa.array(x.tolist(), type=t.to_pyarrow()) for x, t in zip(series, types, strict=True)]
            return pd.Series(fn(*arrays).to_pylist(), index=series[0].index, dtype=object)
        make = ibis.udf.scalar.pandas
    else:
        def call(*arrays):
            return fn(*map(as_array, arrays))
        make = ibis.udf.scalar.pyarrow
    # Ibis names the UDF's arguments from its signature: one wrapper per arity
    if len(types) == 1:
        def one(a):
            return call(a)
        return make(name=name, signature=signature)(one)

    def two(a, b):
        return call(a, b)
    return make(name=name, signature=signature)(two)


class TitleUdfs:
    """The three cleaning UDFs on one engine, for one `processing.title_cleaning` mode and `max_title_words`."""

    def __init__(self, backend: Any, mode: str, max_words: int) -> None:
        import ibis.expr.datatypes as dt  # noqa: PLC0415

        from .engine import engine_name  # noqa: PLC0415
        from .text import clean_titles_arrow  # noqa: PLC0415

        if mode not in {"paper", "light"}:
            raise ValueError(f"processing.title_cleaning must be 'paper' or 'light', got {mode!r}")
        suffix, engine = f"{mode}_{int(max_words)}", engine_name(backend)
        labels = dt.Array(dt.string)
        self._clean = _engine_udf(engine, f"clean_title_{suffix}", ((dt.string,), dt.string),
                                  lambda titles: clean_titles_arrow(titles, mode, max_words))
        self._backup = _engine_udf(engine, f"backup_title_{suffix}", ((dt.string, labels), dt.string),
                                   lambda brands, categories: backup_titles_arrow(brands, categories, mode, max_words))
        self._path = _engine_udf(engine, "category_path", ((labels,), dt.string), category_paths_arrow)

    def clean(self, title: ir.StringValue) -> ir.StringValue:
        """The cleaned title ("" when unusable; a NULL title is treated as "": the engines skip UDFs on NULL)."""
        return self._clean(title.fill_null(""))

    def backup(self, brand: ir.StringValue, categories: ir.ArrayValue) -> ir.StringValue:
        """The cleaned "<brand> <leaf category>"."""
        return self._backup(brand.fill_null(""), _no_null_list(categories))

    def category_path(self, categories: ir.ArrayValue) -> ir.StringValue:
        """The category labels cleaned and joined by " > "."""
        return self._path(_no_null_list(categories))


def _no_null_list(categories: ir.ArrayValue) -> ir.ArrayValue:
    import ibis  # noqa: PLC0415
    import ibis.expr.datatypes as dt  # noqa: PLC0415

    return categories.fill_null(ibis.literal([], type=dt.Array(dt.string)))
