"""Reading the project's JSON files (a dataset's meta.json, a predictor, a bundle manifest) with one error
line for a damaged or foreign file instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import TvmlatError


def read_json(path: str | Path, error: type[TvmlatError], what: str, hint: str) -> Any:
    """The parsed JSON of the file ``path``. A file that is not UTF-8 JSON (truncated, binary, another
    format) raises ``error``: "``path`` is not ``what`` (the parser's reason); ``hint``" (what to do)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is not {what} ({e}); {hint}") from None
