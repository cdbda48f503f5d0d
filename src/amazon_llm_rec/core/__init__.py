"""Library code shared by the pipelines: raw I/O, text cleaning, synthetic data, models."""
