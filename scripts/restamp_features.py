"""Bring the shipped datasets to this tvmlat's features version without refitting, where nothing changed.

Every dataset under datasets/ is recounted with the current features (block rows from their spec,
model rows from the meta.json's model_refs). A dataset whose rows all come out identical gets its
meta.json's features_version set to the current one, with a note, and so do the predictors fitted on
it (``<campaign>.predictor.json``, ``<campaign>.<kind>.predictor.json``): their fits are unchanged.
A dataset with a changed row is listed and left alone: refit its predictors (`tvmlat fit`) instead.

    python scripts/restamp_features.py            # report only
    python scripts/restamp_features.py --write    # stamp what did not change
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's tvmlat
    sys.path.insert(0, str(ROOT))


def main() -> int:
    from tvmlat.dataset import meta_geometry, meta_path, read_dataset, read_meta, refresh_features
    from tvmlat.features import FEATURE_COLUMNS, FEATURES_VERSION

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="stamp the unchanged datasets and their predictors")
    ap.add_argument("--root", default=str(ROOT / "datasets"))
    args = ap.parse_args()
    changed = []
    for pq in sorted(Path(args.root).glob("*/*.parquet")):
        meta = read_meta(pq)
        old = meta.get("features_version")
        if old == FEATURES_VERSION:
            continue
        df = read_dataset(pq)
        fresh = refresh_features(df, meta_geometry(pq, meta), meta.get("model_refs"), str(pq))
        diff = [c for c in FEATURE_COLUMNS
                if c not in df or not (df[c].astype("Int64").fillna(0) == fresh[c].fillna(0)).all()]
        preds = sorted(pq.parent.glob(pq.stem + ".*predictor.json")) + [p for p in [pq.with_suffix(".predictor.json")]
                                                                        if p.exists()]
        preds = sorted(set(preds))
        print(f"{pq.relative_to(args.root)}: version {old}, {'columns changed: ' + ', '.join(diff) if diff else 'unchanged'}"
              f"; predictors: {', '.join(p.name for p in preds) or 'none'}")
        if diff:
            changed.append(pq)
            continue
        if args.write:
            meta["features_version"] = FEATURES_VERSION
            meta.setdefault("notes", []).append(f"features version {old} -> {FEATURES_VERSION} on "
                                                f"{dt.date.today().isoformat()}: every row recounted, none changed")
            meta_path(pq).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            for p in preds:
                text, n = re.subn(r'"features_version": %s,' % old, '"features_version": %d,' % FEATURES_VERSION,
                                  p.read_text(), count=1)
                if n != 1:
                    print(f"  {p.name}: no features_version {old} to stamp; refit it", file=sys.stderr)
                    continue
                p.write_text(text)
    if changed:
        print(f"{len(changed)} datasets changed: refit their predictors with `tvmlat fit`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
