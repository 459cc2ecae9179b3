"""A user's own blocks counted several times in a fit (``tvmlat.predictors.counted``; `calibrate --with-weight`,
`fit --own-weight`)."""

import numpy as np
import pandas as pd
import pytest

from tvmlat.errors import PredictorError
from tvmlat.predictors.counted import OWN_WEIGHT, Counted, check_weight, counted_factory, counted_rows


class Recorder:
    """Stands in for a predictor: keeps what it was fitted on."""

    def fit(self, X, y):
        self.X, self.y = X, np.asarray(y)
        return self


def test_the_named_families_rows_count_that_many_times_and_the_fit_returns_the_model_itself():
    fams = np.array(["a", "own", "b", "own", "a"])
    rows = counted_rows(fams, {"own": 3})
    assert sorted(rows.tolist()) == [0, 1, 1, 1, 2, 3, 3, 3, 4] and rows[:5].tolist() == [0, 1, 2, 3, 4]
    assert counted_rows(fams, {}).tolist() == [0, 1, 2, 3, 4]
    X = pd.DataFrame({"family": fams, "x": np.arange(5.0)})
    fitted = Counted(Recorder, {"own": 3}).fit(X, np.arange(5.0) + 1)
    assert isinstance(fitted, Recorder)  # callers keep (save, describe, predict from) the model, not the wrapper
    assert (fitted.X["family"] == "own").sum() == 6 and len(fitted.X) == 9
    assert np.array_equal(fitted.X["x"].to_numpy() + 1, fitted.y)  # each row keeps its own label


def test_weight_one_leaves_the_factory_as_it_is_and_a_bad_weight_is_one_line():
    assert counted_factory(Recorder, {"own": 1}) is Recorder and counted_factory(Recorder, None) is Recorder
    assert isinstance(counted_factory(Recorder, {"own": OWN_WEIGHT})(), Counted)
    assert check_weight(5) == 5 and check_weight(np.int64(2)) == 2
    for bad in (0, -1, 101, 2.5, True, "3"):
        with pytest.raises(PredictorError, match="--with-weight"):
            check_weight(bad)


def test_counting_own_blocks_moves_the_fit_toward_them_and_never_trains_on_a_held_out_row():
    """A linear model on a shipped campaign: every family counted 3 times is predicted closer in-sample than
    counted once, by the mean squared log error the fit minimises (the fit is convex, so a group's own squared error
    cannot grow with its weight; its mean |log error| can, and did for linear layers at features version 20); held out (its family left out whole) its predictions stay as they were and the
    other families' move; in random folds a test block is never among the training rows."""
    from pathlib import Path

    from tvmlat.cli.fit import make_model_factory
    from tvmlat.dataset import load_for_fit, ok_rows
    from tvmlat.metrics import cross_validate

    df = ok_rows(load_for_fit(Path(__file__).parents[2] / "datasets/llvm/calib-znver4-n100-s3.parquet"))
    df = df.reset_index(drop=True)
    y = df["latency_ms_median"].to_numpy()
    once = make_model_factory("linear", "loops")
    for fam in sorted(df["family"].unique()):
        mine = (df["family"] == fam).to_numpy()
        err = [np.mean(np.log(m().fit(df, y).predict(df[mine]) / y[mine]) ** 2)
               for m in (once, make_model_factory("linear", "loops", counted={fam: 3}))]
        assert err[1] < err[0], fam
    fam = "squeeze_excitation"
    h1 = cross_validate(df, once, split="family")[1]
    h3 = cross_validate(df, make_model_factory("linear", "loops", counted={fam: 3}), split="family")[1]
    assert np.allclose(h1.loc[h1["family"] == fam, "predicted"], h3.loc[h3["family"] == fam, "predicted"])
    assert not np.allclose(h1.loc[h1["family"] != fam, "predicted"], h3.loc[h3["family"] != fam, "predicted"])

    seen = []

    class Spy(Recorder):
        def predict(self, X):
            seen.append((set(self.X["block_id"]), set(X["block_id"]), (self.X["family"] == fam).sum()))
            return np.arange(1.0, len(X) + 1)

    cross_validate(df, counted_factory(Spy, {fam: 3}), split="kfold", k=5)
    n_fam = int((df["family"] == fam).sum())
    assert len(seen) == 5 and all(not (train & test) for train, test, _ in seen)
    assert sum(n for _, _, n in seen) == 3 * 4 * n_fam  # each of its rows, in 4 of 5 training sets, 3 times
