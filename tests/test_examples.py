"""Every example script runs headless in fast mode, checks its claims and saves a picture.

Convention for examples/*.py: a ``main(argv)`` that accepts ``--fast`` (a few seconds)
and ``--out DIR`` (where its PNGs go), asserts what it claims, and runs headless
(matplotlib's Agg backend).
"""

import runpy
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(FOLDER.glob("*.py"))


def test_the_six_examples_of_the_issue_exist():
    names = {p.stem for p in EXAMPLES}
    assert {"training_trace", "mse_vs_mae", "gradient_magnitudes", "mae_oscillation",
            "robust_lines", "many_datasets"} <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_fast_and_saves_pictures(script, tmp_path, capsys):
    namespace = runpy.run_path(str(script), run_name="__example__")
    assert callable(namespace.get("main")), f"{script.name} has no main(argv)"
    namespace["main"](["--fast", "--out", str(tmp_path)])
    pictures = sorted(tmp_path.glob("*.png"))
    assert pictures, f"{script.name} saved no PNG in --out"
    for picture in pictures:
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.strip(), f"{script.name} printed nothing"


def test_mse_vs_mae_prints_the_corrected_numbers(tmp_path):
    namespace = runpy.run_path(str(FOLDER / "mse_vs_mae.py"), run_name="__example__")
    result = namespace["main"](["--out", str(tmp_path)])
    assert result["mse"] == 1037.6 and result["mae"] == 15.2
    assert round(100 * result["outlier_share_abs"], 1) == 94.7
    assert round(100 * result["outlier_share_sq"], 2) == 99.92
