"""The Dagster layer: it wires the Dagster-free modules together and computes nothing itself."""
