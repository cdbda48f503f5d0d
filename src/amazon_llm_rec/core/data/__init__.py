"""Data: raw review I/O, the DuckDB/Ibis engine, download, synthetic data, title cleaning."""
