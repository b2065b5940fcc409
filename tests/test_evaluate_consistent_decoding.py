"""Tests of scripts/evaluate_consistent_decoding.py on a tiny trained model."""

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import torch
from test_main import DEMO_CFG, tiny_opts

import main as lannunet_main

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_consistent_decoding.py"


def load_script():
    spec = importlib.util.spec_from_file_location("evaluate_consistent_decoding", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_with_and_without_consistent_decoding(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert lannunet_main.main(["--cfg", DEMO_CFG, *tiny_opts(tiny_data, out, epochs=1)]) == 0
    old = tmp_path / "old.model"
    state = torch.load(out / "model_best.model", weights_only=True)
    del state["shape_model"]
    torch.save(state, old)
    script = load_script()
    args = ["--cfg", str(out / "config.yaml"), "--checkpoints", str(old)]
    assert script.main(args) == 2
    assert "--fit-shape-model" in capsys.readouterr().err
    table_path = tmp_path / "table.csv"
    assert script.main([*args, "--fit-shape-model", "--out", str(table_path)]) == 0
    table = pd.read_csv(table_path)
    assert table["consistent_decoding"].tolist() == [False, False, True, True]
    assert table["method"].tolist() == ["smha", "shape"] * 2
    for column in ("mre", "sdr_40", "over_40", "replaced", "spearman", "ellipse_shape_coverage"):
        assert column in table.columns, column
    assert (table.loc[~table["consistent_decoding"], "replaced"] == 0).all()
    assert (table["layout_ms_per_image"] > 0).all()
