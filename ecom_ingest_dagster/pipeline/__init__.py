"""The data path, one module per stage, in the order a drop travels it.

1. ``landing``   noticing drops (the sensor's cursor) and moving them aside once committed
2. ``spark``     the Spark session every run shares
3. ``query``     the Structured Streaming query over the landing directory: its batches
   ``run_loop``  how long a run lasts and how it stops (its plan, timers and stop)
4. ``read``      one drop's CSV, header by name, rows as text, in bounded blocks
5. ``validate``  the contract as a Pandera schema: every reason of every row
6. ``load``      one file, one transaction: valid rows COPY'd (``encode``), rejected rows
   quarantined (``quarantine``); ``load_batch``: a batch's small files in one commit
7. ``ledger``    the file and batch ledgers (exactly-once bookkeeping)
8. ``measure``   per-batch metrics, summaries, stage timing, the metric logs
9. ``sampling``  resource use sampled while a run works

Beside them: ``database`` (connections, retries, migrations) and ``run`` (the one
Dagster-free entry point that the CLI and the Dagster assets both call). None of these
modules imports Dagster.
"""
