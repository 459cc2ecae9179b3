"""Bring the shipped datasets to this tvmlat's features version without refitting, where nothing changed.

Every dataset under datasets/ is recounted with the current features (block rows from their spec,
model rows from the meta.json's model_refs). A dataset whose rows all come out identical gets its
meta.json's features_version set to the current one, with a note, and so do the predictors fitted on
it (``<campaign>.predictor.json``, ``<campaign>.<kind>.predictor.json``): their fits are unchanged. A column the
version adds that is 0 in every row changes no row: it is written into the dataset when it is stamped.
A dataset with a changed row is listed and left alone, unless ``--refit``: then its rows are written
recounted and every predictor fitted on it is fitted again as `tvmlat fit` would (same kind, feature
set, target and profile; a network correction is kept, marked as fitted before). A predictor that uses a
column this version does not have (a features version reverted after campaigns were measured with it) makes
its dataset changed too; that column is dropped from the rows when they are written.

    python scripts/restamp_features.py                    # report only
    python scripts/restamp_features.py --write            # stamp what did not change
    python scripts/restamp_features.py --write --refit    # and recount + refit what did
    python scripts/restamp_features.py --refit-predictors  # refit every predictor (rows untouched)
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
    from tvmlat.dataset import dataset_hash, meta_geometry, meta_path, read_dataset, read_meta, refresh_features
    from tvmlat.features import FEATURE_COLUMNS, FEATURES_VERSION

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="stamp the unchanged datasets and their predictors")
    ap.add_argument("--refit", action="store_true", help="with --write: write changed datasets recounted and "
                                                          "refit their predictors")
    ap.add_argument("--refit-predictors", action="store_true",
                    help="refit every predictor of the datasets already at this version (rows untouched): after a "
                         "change to what a predictor file holds, e.g. its interval calibration")
    ap.add_argument("--root", default=str(ROOT / "datasets"))
    args = ap.parse_args()
    found = sorted(Path(args.root).glob("*/*.parquet"))
    if not found:  # a mistyped --root would otherwise "stamp" nothing and say so with exit code 0
        print(f"error: no datasets (<target>/<campaign>.parquet) under {args.root}; give --root the datasets folder",
              file=sys.stderr)
        return 2
    changed = []
    for pq in found:
        meta = read_meta(pq)
        old = meta.get("features_version")
        if old == FEATURES_VERSION:
            if args.refit_predictors:
                from tvmlat.dataset import ok_rows

                refit_predictors(pq, ok_rows(read_dataset(pq)), meta, sorted(pq.parent.glob(pq.stem + ".*predictor.json")))
            continue
        df = read_dataset(pq)
        fresh = refresh_features(df, meta_geometry(pq, meta), meta.get("model_refs"), str(pq))
        # a column this version adds that is 0 in every row (e.g. version 24's mac_l1thrash_far on a geometry that
        # records no thrash reach): no row changes; it is written in when the dataset is stamped
        added = [c for c in FEATURE_COLUMNS if c not in df and (fresh[c].fillna(0) == 0).all()]
        diff = [c for c in FEATURE_COLUMNS if c not in added
                and (c not in df or not (df[c].astype("Int64").fillna(0) == fresh[c].fillna(0)).all())]
        preds = sorted(pq.parent.glob(pq.stem + ".*predictor.json"))  # <campaign>.predictor.json included
        # a predictor fitted with a column this version no longer has (a version reverted after its campaigns
        # were measured): its fit is not unchanged, and the column goes from the rows
        stale = sorted({c for p in preds for c in json.loads(p.read_text()).get("features") or []} - set(FEATURE_COLUMNS))
        diff += [c for c in stale if c not in diff]
        new_cols = f" (new, 0 in every row: {', '.join(added)})" if added and not diff else ""
        print(f"{pq.relative_to(args.root)}: version {old}, {'columns changed: ' + ', '.join(diff) if diff else 'unchanged'}"
              f"{new_cols}; predictors: {', '.join(p.name for p in preds) or 'none'}")
        if diff:
            changed.append(pq)
            if args.write and args.refit:
                refit(pq, df, fresh, meta, old, diff, preds)
            continue
        if args.write:
            hashes = []  # (before, after): the predictors' dataset_hash covers the feature columns, the new one too
            if added:
                before = dataset_hash(pq)
                for c in added:
                    df[c] = fresh[c].fillna(0).astype("int64")
                df.to_parquet(pq, index=False)
                hashes = [(before, dataset_hash(pq))]
            meta["features_version"] = FEATURES_VERSION
            meta.setdefault("notes", []).append(f"features version {old} -> {FEATURES_VERSION} on "
                                                f"{dt.date.today().isoformat()}: every row recounted, none changed"
                                                + (f"; {', '.join(added)} added, 0 in every row" if added else ""))
            meta_path(pq).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            for p in preds:
                text, n = re.subn(r'"features_version": %s,' % old, '"features_version": %d,' % FEATURES_VERSION,
                                  p.read_text(), count=1)
                if n != 1:
                    print(f"  {p.name}: no features_version {old} to stamp; refit it", file=sys.stderr)
                    continue
                for before, after in hashes:
                    text = text.replace(f'"dataset_hash": "{before}"', f'"dataset_hash": "{after}"', 1)
                p.write_text(text)
    if changed and not args.refit:
        print(f"{len(changed)} datasets changed: refit their predictors with `tvmlat fit`", file=sys.stderr)
    return 0


def refit(pq: Path, df, fresh, meta: dict, old, diff: list[str], preds: list[Path]) -> None:
    """Write ``pq`` with the recounted feature columns and the new version, then fit each predictor again."""
    from tvmlat.dataset import meta_path, ok_rows
    from tvmlat.features import FEATURE_COLUMNS, FEATURES_VERSION

    out = df.drop(columns=[c for c in diff if c not in FEATURE_COLUMNS and c in df])
    for c in FEATURE_COLUMNS:
        out[c] = fresh[c].astype("int64")
    out.to_parquet(pq, index=False)
    meta["features_version"] = FEATURES_VERSION
    meta.setdefault("notes", []).append(f"features version {old} -> {FEATURES_VERSION} on {dt.date.today().isoformat()}: "
                                        f"every row recounted ({', '.join(diff)} changed), predictors refitted")
    meta_path(pq).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    refit_predictors(pq, ok_rows(out), meta, preds)


def refit_predictors(pq: Path, good, meta: dict, preds: list[Path]) -> None:
    """Fit each of ``preds`` again on ``good`` (the ok rows of ``pq``) as `tvmlat fit` would: same kind, feature
    set, target and profile; as `tvmlat fit` does, a memory model is kept, and a network correction is fitted
    again from the timings it stores (kept, marked as fitted before, where it stores none)."""
    import io

    from rich.console import Console

    from tvmlat.cli.fit import fit_and_report
    from tvmlat.dataset import dataset_hash, meta_geometry

    for p in preds:
        doc = json.loads(p.read_text())
        params = doc["model"].get("params", {})
        features = params.get("features") or (params.get("linear") or {}).get("features") or "loops"
        quiet = Console(file=io.StringIO(), width=200)
        fit_and_report(good, features=features if isinstance(features, str) else "loops", target=doc["target"],
                       profile=doc.get("profile", "default"), dataset_hash=dataset_hash(pq), out=p, con=quiet,
                       model=doc["kind"], geometry=meta_geometry(pq, meta), model_refs=meta.get("model_refs"))
        new = json.loads(p.read_text())
        # `tvmlat fit` keeps a network correction (refitted from its stored timings where it has them) and a memory
        # model of the file it replaces (fit._carried, fit._after_carry)
        nc = new.get("network_correction")
        if nc is not None:
            how = "refitted from its stored timings" if nc.get("timings_reused_from") else f"kept ({nc.get('note')})"
            print(f"  network correction of {p.name} {how}")
        ho = new["training"]["metrics"].get("held-out families", {})
        print(f"  refitted {p.name}: held out {ho.get('median_ape', float('nan')):.1f} %, "
              f"{100 * ho.get('within10', float('nan')):.0f} % within +-10 %")


if __name__ == "__main__":
    sys.exit(main())
