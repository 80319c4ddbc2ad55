"""A Ray Data source whose later batches wait for the test, so that an interrupt or an engine
kill happens at a chosen point instead of a bet on timing (CI once went red when a run finished
before the test's watcher saw three part files).

Each 20-row block of the source carries its number (column ``block``). When the run is scoring,
blocks from ``held_from`` on wait until the test opens the gate (creates the file ``gate``). The
run is scoring while it holds the output folder's lease (``_lease.json``), which it takes after
the driver's scan of the ids, so the scan passes freely. Nothing waits forever: a held block
gives up after :data:`MAX_WAIT` seconds (and Ray cancels the tasks of an interrupted run).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

BLOCK_ROWS = 20
MAX_WAIT = 300.0


def gated_source(ray, df: pd.DataFrame, output: Path, gate: Path, held_from: int):
    """``df`` as a Dataset of 20-row blocks whose blocks from ``held_from`` on wait for ``gate``."""
    blocks = [df.iloc[i : i + BLOCK_ROWS].assign(block=i // BLOCK_ROWS) for i in range(0, len(df), BLOCK_ROWS)]
    return ray.data.from_pandas(blocks).map_batches(
        _wait_for_gate,
        batch_format="pyarrow",
        batch_size=None,
        num_cpus=0,
        fn_kwargs={"output": str(output), "gate": str(gate), "held_from": held_from},
    )


def _wait_for_gate(batch: pa.Table, output: str, gate: str, held_from: int) -> pa.Table:
    scoring = (Path(output) / "_lease.json").exists()
    if scoring and batch.num_rows and batch.column("block")[0].as_py() >= held_from:
        started = time.monotonic()
        while not Path(gate).exists() and time.monotonic() - started < MAX_WAIT:
            time.sleep(0.1)
    return batch
