"""Tools around the data path: the ``ecom-ingest`` CLI, the benchmark, the drop
generator, the replay of quarantined rows and the performance report."""
