"""The lossfn command line: outputs against independent arithmetic, and every bad input."""

import contextlib
import csv
import hashlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lossfn.cli import main

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"group", "n", "ok", "ols", "lad", "huber", "loglik", "aic", "recommended"}


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def lines(x, y, group):
    return [(group, f"{a:.10g}", f"{b:.10g}") for a, b in zip(x, y)]


@pytest.fixture(scope="module")
def clear_cases(tmp_path_factory):
    """Three groups whose noise model is not in doubt (m = 400 each)."""
    rng = np.random.default_rng(11)
    m = 400
    x = rng.uniform(0, 10, (3, m))
    gauss = 1 + 2 * x[0] + rng.normal(0, 1, m)
    laplace = -1 + 0.5 * x[1] + rng.laplace(0, 1, m)
    outliers = 3 - x[2] + rng.normal(0, 0.5, m)
    outliers[: m // 10] += rng.uniform(10, 30, m // 10)
    rows = lines(x[0], gauss, "g") + lines(x[1], laplace, "l") + lines(x[2], outliers, "o")
    rows = [rows[i] for i in rng.permutation(len(rows))]
    path = write_csv(tmp_path_factory.mktemp("clear") / "clear.csv", ["site", "dose", "resp"], rows)
    return path, {"g": (x[0], gauss), "l": (x[1], laplace), "o": (x[2], outliers)}


def test_sample_dataset_json_schema(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, err = run(["fit", "--out", out], capsys)
    assert code == 0 and err == ""
    records = json.loads(out.read_text())
    # Groups in order of first appearance in the (shuffled) file; see lossfn/data/make_sample.py.
    assert [r["group"] for r in records] == ["outliers", "contaminated", "gaussian", "laplace",
                                             "student_t", "small"]
    assert [r["n"] for r in records] == [100, 200, 120, 150, 140, 15]
    for r in records:
        assert set(r) == KEYS
        assert r["ok"] is True and isinstance(r["n"], int)
        for method in ("ols", "lad", "huber"):
            assert set(r[method]) == {"intercept", "slope"}
            assert all(isinstance(v, float) for v in r[method].values())
        for key in ("loglik", "aic"):
            assert set(r[key]) == {"gaussian", "laplace", "huber"}
        for model in ("gaussian", "laplace", "huber"):
            assert r["aic"][model] == pytest.approx(2 * 3 - 2 * r["loglik"][model], rel=1e-12)
        best = min(r["aic"], key=r["aic"].get)
        assert r["recommended"] == {"gaussian": "mse", "laplace": "mae", "huber": "huber"}[best]
    # The table on stdout has a header, a rule and one line per group.
    assert len(stdout.strip().splitlines()) == 2 + len(records)
    assert "gaussian" in stdout and "outliers" in stdout


@pytest.fixture(scope="module")
def clear_run(clear_cases, tmp_path_factory):
    """One ``lossfn fit`` of the clear cases into a folder holding an old results file."""
    path, data = clear_cases
    folder = tmp_path_factory.mktemp("out")
    out = folder / "r.json"
    out.write_text("old contents")
    before = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["fit", str(path), "--x", "dose", "--y", "resp", "--group", "site",
                     "--out", str(out), "--quiet"])
    after = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "records": {r["group"]: r for r in json.loads(out.read_text())},
            "folder": folder, "hashes": (before, after), "data": data}


def test_recommendation_and_numbers_on_clear_cases(clear_run):
    assert clear_run["code"] == 0 and clear_run["stderr"] == "" and clear_run["stdout"] == ""
    records, data = clear_run["records"], clear_run["data"]
    assert records["g"]["recommended"] == "mse"
    assert records["l"]["recommended"] == "mae"
    assert records["o"]["recommended"] in ("mae", "huber")
    for name, (x, y) in data.items():
        r = records[name]
        slope, intercept = np.polyfit(x, y, 1)
        assert r["ols"]["slope"] == pytest.approx(slope, rel=1e-9)
        assert r["ols"]["intercept"] == pytest.approx(intercept, rel=1e-9, abs=1e-9)
        # Gaussian log-likelihood of the OLS residuals at σ̂ (ddof 0), by scipy.
        res = y - (r["ols"]["intercept"] + r["ols"]["slope"] * x)
        assert r["loglik"]["gaussian"] == pytest.approx(
            stats.norm.logpdf(res, res.mean(), res.std()).sum(), rel=1e-8)
        # Laplace log-likelihood of the LAD residuals at their MLE (median, mean |r − median|).
        res = y - (r["lad"]["intercept"] + r["lad"]["slope"] * x)
        loc, b = stats.laplace.fit(res)
        assert r["loglik"]["laplace"] == pytest.approx(stats.laplace.logpdf(res, loc, b).sum(), rel=1e-8)


def test_batched_groups_equal_groups_fitted_alone(clear_run, tmp_path, capsys):
    records = clear_run["records"]
    x, y = clear_run["data"]["l"]
    alone_csv = write_csv(tmp_path / "l.csv", ["dose", "resp"], [r[1:] for r in lines(x, y, "l")])
    alone = tmp_path / "l.json"
    run(["fit", alone_csv, "--x", "dose", "--y", "resp", "--out", alone, "--quiet"], capsys)
    (single,) = json.loads(alone.read_text())
    assert single["group"] == "all"
    for key in ("ols", "lad", "huber", "loglik", "aic"):
        for inner, value in single[key].items():
            assert records["l"][key][inner] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, inner)


def test_csv_output_has_the_json_fields_flattened(tmp_path, capsys):
    as_json, as_csv = tmp_path / "r.json", tmp_path / "r.csv"
    run(["fit", "--quiet", "--out", as_json], capsys)
    run(["fit", "--quiet", "--out", as_csv], capsys)
    records = json.loads(as_json.read_text())
    with open(as_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["group", "n", "ok", "ols_intercept", "ols_slope", "lad_intercept",
                             "lad_slope", "huber_intercept", "huber_slope", "loglik_gaussian",
                             "loglik_laplace", "loglik_huber", "aic_gaussian", "aic_laplace",
                             "aic_huber", "recommended"]
    for record, row in zip(records, rows):
        assert row["group"] == record["group"] and int(row["n"]) == record["n"]
        assert float(row["aic_laplace"]) == record["aic"]["laplace"]
        assert row["recommended"] == record["recommended"]


def test_input_unchanged_output_atomic_and_replaced(clear_run):
    before, after = clear_run["hashes"]
    assert before == after
    # The old results file was replaced, and no temporary file is left beside it.
    assert sorted(p.name for p in clear_run["folder"].iterdir()) == ["r.json"]
    assert set(clear_run["records"]) == {"g", "l", "o"}


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, capsys, monkeypatch):
    from lossfn.cli import _output

    out = tmp_path / "r.json"
    out.write_text("old contents")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_output.json, "dump", broken)
    with pytest.raises(OSError, match="disk full"):
        main(["fit", "--quiet", "--out", str(out)])
    assert out.read_text() == "old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_plot_is_a_png(tmp_path, capsys):
    figure = tmp_path / "fits.png"
    code, _, err = run(["fit", "--quiet", "--plot", figure], capsys)
    assert code == 0 and err == ""
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_values_are_dropped_and_counted(tmp_path, capsys):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 30)
    y = 1 + x + rng.normal(0, 0.1, 30)
    rows = [(f"{a}", f"{b}") for a, b in zip(x, y)]
    holes = rows[:]
    holes[3] = ("", holes[3][1])
    holes[7] = (holes[7][0], "NA")
    holes.insert(10, ("nan", "2.0"))
    full = write_csv(tmp_path / "full.csv", ["x", "y"], [r for i, r in enumerate(rows) if i not in (3, 7)])
    gappy = write_csv(tmp_path / "gappy.csv", ["x", "y"], holes)
    code, _, err = run(["fit", gappy, "--quiet", "--out", tmp_path / "a.json"], capsys)
    assert code == 0
    assert err.strip() == "lossfn: dropped 3 rows with a missing value (of 31)."
    run(["fit", full, "--quiet", "--out", tmp_path / "b.json"], capsys)
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a == b


def test_small_group_is_reported_not_fatal(clear_cases, tmp_path, capsys):
    _, data = clear_cases
    x, y = data["g"]
    rows = lines(x[:50], y[:50], "big") + [("tiny", "1.0", "2.0"), ("tiny", "2.0", "3.5")]
    path = write_csv(tmp_path / "d.csv", ["grp", "x", "y"], rows)
    out = tmp_path / "r.json"
    code, _, err = run(["fit", path, "--group", "grp", "--out", out, "--quiet"], capsys)
    assert code == 0
    assert err.strip().splitlines() == [
        "lossfn: group 'tiny' has 2 points; a line and a noise scale need at least 3: "
        "reported with ok=false."]
    big, tiny = json.loads(out.read_text())
    assert big["ok"] is True and big["recommended"] in ("mse", "mae", "huber")
    assert tiny == {"group": "tiny", "n": 2, "ok": False,
                    "ols": {"intercept": None, "slope": None},
                    "lad": {"intercept": None, "slope": None},
                    "huber": {"intercept": None, "slope": None},
                    "loglik": {"gaussian": None, "laplace": None, "huber": None},
                    "aic": {"gaussian": None, "laplace": None, "huber": None},
                    "recommended": None}
    slope, intercept = np.polyfit(x[:50], y[:50], 1)
    assert big["ols"]["slope"] == pytest.approx(slope, rel=1e-9)


def _bad(tmp_path):
    good = write_csv(tmp_path / "good.csv", ["dose", "response"], [("1", "2"), ("2", "4"), ("3", "7")])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("dose,response\n")
    text = write_csv(tmp_path / "text.csv", ["dose", "response"], [("1", "2"), ("two", "4"), ("3", "7")])
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("dose,response\n1,2\n2,4,9\n")
    infinite = write_csv(tmp_path / "inf.csv", ["dose", "response"], [("1", "2"), ("inf", "4")])
    return [
        (["fit", tmp_path / "nope.csv"], "nope.csv: no such file"),
        (["fit", good, "--x", "dse", "--y", "response"], "no column 'dse' (given by --x); the columns are 'dose', 'response'. Did you mean --x 'dose'?"),
        (["fit", good, "--x", "dose", "--y", "Response"], "Did you mean --y 'response'?"),
        (["fit", good, "--x", "dose", "--y", "response", "--group", "site"], "no column 'site' (given by --group)"),
        (["fit", good, "--x", "dose"], "no column 'y' (given by --y)"),
        (["fit", text, "--x", "dose", "--y", "response"], "column 'dose', row 3 holds 'two', which is not a number"),
        (["fit", infinite, "--x", "dose", "--y", "response"], "values must be finite numbers"),
        (["fit", empty], "the file is empty"),
        (["fit", header_only], "has a header (dose, response) but no rows of data"),
        (["fit", ragged, "--x", "dose", "--y", "response"], "row 3 has 3 cells but the header has 2"),
        (["fit", tmp_path], "is a folder, not a CSV file"),
        (["fit", "--out", tmp_path / "r.txt"], "unknown file type '.txt'"),
        (["fit", "--out", tmp_path / "no" / "r.json"], "does not exist; create it first"),
        (["fit", "--plot", tmp_path / "fig.gif"], "unknown file type '.gif'"),
        (["fit", "--delta", "-1"], "--delta must be a number > 0"),
        (["simulate", "--reps", "1"], "--reps must be at least 2"),
        (["simulate", "--m", "0"], "--m must be at least 1"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    for argv, message in _bad(tmp_path):
        code, out, err = run(argv, capsys)
        assert code == 2, argv
        assert out == "", argv
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert message in err, (argv, err)
        assert err.startswith("lossfn: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "empty.csv", "good.csv", "header.csv", "inf.csv", "ragged.csv", "text.csv"]


def test_all_rows_missing_is_an_error(tmp_path, capsys):
    path = write_csv(tmp_path / "holes.csv", ["x", "y"], [("", "1"), ("2", "NA")])
    code, _, err = run(["fit", path], capsys)
    assert code == 2 and "all 2 rows miss a value" in err


def test_usage_errors_exit_2(capsys):
    for argv in (["fit", "--bogus"], ["nonsense"], []):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    capsys.readouterr()


def _module(*args):
    return subprocess.run([sys.executable, "-m", "lossfn", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_python_m_lossfn_help_and_clean_failure(tmp_path):
    shown = _module("fit", "--help")
    assert shown.returncode == 0
    assert "examples:" in shown.stdout and "lossfn fit data.csv --x dose" in shown.stdout
    failed = _module("fit", tmp_path / "missing.csv")
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines() == [
        f"lossfn: fit: {tmp_path / 'missing.csv'}: no such file. Check the path, or omit it to "
        "use the sample data."]


def test_simulate_table_and_output(tmp_path, capsys):
    out = tmp_path / "eff.json"
    code, stdout, err = run(["simulate", "--noise", "gaussian", "laplace", "--m", "25",
                             "--reps", "3000", "--out", out], capsys)
    assert code == 0 and err == ""
    rows = json.loads(out.read_text())
    assert [(r["noise"], r["estimator"]) for r in rows] == [
        (n, e) for n in ("gaussian", "laplace") for e in ("mean", "median", "huber")]
    eff = {(r["noise"], r["estimator"]): r for r in rows}
    # Under Gaussian noise the mean attains the Cramér–Rao bound σ²/m; the median does not.
    assert eff["gaussian", "mean"]["variance"] == pytest.approx(1 / 25, rel=0.1)
    assert eff["gaussian", "median"]["efficiency"] < 0.8
    # Under Laplace noise (variance 2b²) the median beats the mean.
    assert eff["laplace", "mean"]["variance"] == pytest.approx(2 / 25, rel=0.1)
    assert eff["laplace", "median"]["efficiency"] > 1.2
    assert "gaussian" in stdout and "median" in stdout


def test_progress_bar_on_request(capsys):
    code, _, err = run(["fit", "--quiet", "--progress"], capsys)
    assert code == 0
    assert "lossfn fit" in err and "stage" in err
    code, _, err = run(["fit", "--quiet", "--no-progress"], capsys)
    assert code == 0 and err == ""


def test_a_group_whose_fit_fails_is_explained_on_stderr(clear_cases, tmp_path, capsys):
    _, data = clear_cases
    x, y = data["g"]
    rows = lines(x[:40], y[:40], "fine") + [("flat", "2.0", f"{v:.3f}") for v in (1.0, 2.0, 4.0, 3.0)]
    path = write_csv(tmp_path / "d.csv", ["grp", "x", "y"], rows)
    out = tmp_path / "r.json"
    code, _, err = run(["fit", path, "--group", "grp", "--out", out, "--quiet"], capsys)
    assert code == 0
    (line,) = err.strip().splitlines()
    assert line.startswith("lossfn: group 'flat': the OLS/LAD/HUBER fit failed (constant x")
    fine, flat = json.loads(out.read_text())
    assert fine["ok"] is True and flat["ok"] is False and flat["ols"]["slope"] is None
