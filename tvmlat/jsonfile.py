"""The project's JSON files (a dataset's meta.json, a predictor, a bundle manifest): read with one error
line for a damaged or foreign file instead of a traceback, written whole or not at all."""

from __future__ import annotations

import json
import os
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


def write_json(path: str | Path, doc: Any, **dumps: Any) -> None:
    """Write ``doc`` as JSON (``json.dumps`` keywords ``dumps``) to ``path`` through a temporary file in the same
    folder and a rename, so a crash or Ctrl-C mid-write leaves the old file, never half of the new one."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, **dumps))
    os.replace(tmp, p)
