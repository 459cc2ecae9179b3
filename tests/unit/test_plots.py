"""Predicted-against-measured plots of fit and evaluate, and what happens without matplotlib."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from helpers import assert_user_error, run_cli
from tvmlat.errors import TvmlatError
from tvmlat.plots import accuracy_plot

PNG = b"\x89PNG\r\n\x1a\n"


def test_fit_and_evaluate_write_their_plots(tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    code, out, err = run_cli(["fit", "-d", path, "-o", tmp_path / "p.json", "--plot", tmp_path / "fit.png"], capsys)
    assert code == 0, err
    assert (tmp_path / "fit.png").read_bytes()[:8] == PNG
    code, out, err = run_cli(["evaluate", "-p", tmp_path / "p.json", "-d", path, "--plot", tmp_path / "sub" / "ev.png"],
                             capsys)
    assert code == 0, err
    assert (tmp_path / "sub" / "ev.png").read_bytes()[:8] == PNG


def test_without_matplotlib_a_plot_is_one_line_before_any_work(tmp_path, fake_dataset, capsys, monkeypatch):
    path, _ = fake_dataset
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    line = assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "p.json", "--plot", tmp_path / "f.png"],
                                     capsys), "--plot needs matplotlib", "tvmlat[plot]")
    assert line and not (tmp_path / "p.json").exists()
    assert_user_error(run_cli(["evaluate", "-p", tmp_path / "none.json", "-d", path, "--plot", tmp_path / "e.png"],
                              capsys), "--plot needs matplotlib")


def test_a_plot_format_matplotlib_cannot_write_is_one_line_before_any_work(tmp_path, fake_dataset, capsys):
    path, _ = fake_dataset
    assert_user_error(run_cli(["fit", "-d", path, "-o", tmp_path / "p.json", "--plot", tmp_path / "f.txt"], capsys),
                      "--plot", "can't write .txt files", "name a .png")
    assert not (tmp_path / "p.json").exists()
    assert_user_error(run_cli(["evaluate", "-p", tmp_path / "none.json", "-d", path, "--plot", tmp_path / "e.doc"],
                              capsys), "can't write .doc files")
    assert_user_error(run_cli(["analyze", "examples/networks.py:small_cnn", "--plot", tmp_path / "a.TXT"], capsys),
                      "can't write .txt files")
    code, out, err = run_cli(["fit", "-d", path, "-o", tmp_path / "p.json", "--plot", tmp_path / "f.SVG"], capsys)
    assert code == 0, err
    assert (tmp_path / "f.SVG").read_text().lstrip().startswith("<?xml")


def test_nothing_to_plot_is_said(tmp_path):
    empty = pd.DataFrame({"measured": [], "predicted": [], "family": []})
    with pytest.raises(TvmlatError, match="nothing to plot"):
        accuracy_plot({"a": empty}, tmp_path / "x.png", "t")
