"""What the benchmark scripts share. Import it inside ``main()``: a script that is also a MODEL_REF
(``tvmlat measure benchmarks/x.py:entries``) is loaded from its path, without this folder on sys.path."""

from __future__ import annotations

import pandas as pd


def read_rows(path, made_by: str) -> pd.DataFrame:
    """The rows of a parquet a benchmark reads (``tvmlat measure`` or ``calibrate`` output). A missing or
    foreign file ends the script with one error line that says ``made_by`` (how to make it), not a traceback."""
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {path} is not a readable parquet file ({type(e).__name__}); {made_by}") from None
    if not {"status", "latency_ms_median"} <= set(df.columns):
        raise SystemExit(f"error: {path} has no status / latency_ms_median columns, so it is not tvmlat's; {made_by}")
    return df


def time_ms(runner, module, inputs: list, what: str) -> float:
    """The median latency (ms) of ``module`` on ``inputs`` with ``runner`` (a ``LocalRunner``); a block that
    fails ends the script with one line naming ``what`` and why."""
    res = runner.run(module.eval(), list(inputs))
    if res.status != "ok":
        raise SystemExit(f"error: {what}: {res.status}: {res.error}")
    return res.latency_ms_median
