"""What the benchmark scripts share. Import it inside ``main()``: a script that is also a MODEL_REF
(``tvmlat measure benchmarks/x.py:entries``) is loaded from its path, without this folder on sys.path."""

from __future__ import annotations

import pandas as pd


def read_rows(path, made_by: str) -> pd.DataFrame:
    """The rows of a parquet a benchmark reads (``tvmlat measure`` or ``calibrate`` output), read and checked
    by ``tvmlat.dataset.read_dataset``. A missing or foreign file ends the script with its one error line
    and ``made_by`` (how to make the file), not a traceback."""
    from tvmlat.dataset import read_dataset
    from tvmlat.errors import TvmlatError

    try:
        return read_dataset(path, missing_hint=made_by)
    except TvmlatError as e:
        raise SystemExit(f"error: {e}" if made_by in str(e) else f"error: {e}; {made_by}") from None


def time_ms(runner, module, inputs: list, what: str) -> float:
    """The median latency (ms) of ``module`` on ``inputs`` with ``runner`` (a ``LocalRunner``); a block that
    fails ends the script with one line naming ``what`` and why."""
    res = runner.run(module.eval(), list(inputs))
    if res.status != "ok":
        raise SystemExit(f"error: {what}: {res.status}: {res.error}")
    return res.latency_ms_median
