"""The engine's contracts: seeding, chunking, threads, vmapping, shapes, errors."""

import math

import pytest
import torch

import lossfn
from lossfn import ShapeError, location, montecarlo

EST = {"mean": "mean", "median": "median", "huber": montecarlo.huber(scale=1.0)}


def same(a, b):
    """Bitwise equality of two studies: the merged co-moments and every row field."""
    rows = [(x, y) for name in a for x, y in zip(a[name], b[name])]
    return (all(torch.equal(x, y) for x, y in zip(a.moments, b.moments))
            and all(torch.equal(x, y) or (x.isnan() & y.isnan()).all() for x, y in rows))


def test_chunk_size_never_changes_a_bit():
    kw = dict(m=9, reps=2_345, seed=11, block_size=200)  # 12 blocks, the last partial
    runs = [montecarlo.run(EST, lossfn.Laplace(1.0), chunk_size=c, **kw)
            for c in (1, 200, 650, 10**9)]
    for other in runs[1:]:
        assert same(runs[0], other)


def test_thread_count_never_changes_a_bit():
    kw = dict(m=15, reps=40_000, seed=3, block_size=16_384)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = montecarlo.run(EST, lossfn.Gaussian(1.0), **kw)
        torch.set_num_threads(max(2, before))
        many = montecarlo.run(EST, lossfn.Gaussian(1.0), **kw)
    finally:
        torch.set_num_threads(before)
    assert same(one, many)


def test_seed_reproduces_and_distinguishes():
    kw = dict(m=5, reps=500)
    a = montecarlo.run({"mean": "mean"}, lossfn.Gaussian(1.0), seed=1, **kw)
    b = montecarlo.run({"mean": "mean"}, lossfn.Gaussian(1.0), seed=1, **kw)
    c = montecarlo.run({"mean": "mean"}, lossfn.Gaussian(1.0), seed=2, **kw)
    assert same(a, b) and not torch.equal(a["mean"].bias, c["mean"].bias)


def test_blocks_draw_from_documented_seeds():
    # Oracle: draw each block directly with the documented seed and average its first points.
    noise, m, block = lossfn.Laplace(2.0), 4, 300
    first = montecarlo.per_replicate(lambda x: x[0])
    study = montecarlo.run({"first": first}, noise, m=m, reps=750, seed=5, block_size=block,
                           truth=1.5, chunk_size=400)
    draws = [noise.sample((n, m), generator=torch.Generator().manual_seed(
        montecarlo.block_seed(5, b)), dtype=torch.float64) for b, n in enumerate((300, 300, 150))]
    values = torch.cat(draws)[:, 0]
    torch.testing.assert_close(study["first"].mean, values.mean() + 1.5, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(study["first"].variance, values.var(), rtol=1e-12, atol=0)
    seeds = {montecarlo.block_seed(5, b) for b in range(10_000)}
    assert len(seeds) == 10_000


def test_one_replicate_functions_are_vmapped_to_the_batched_result():
    kw = dict(m=8, reps=1_000, seed=4, block_size=256)
    batched = montecarlo.run({"mean": lambda x: x.mean(-1), "median": location.median},
                             lossfn.Gaussian(1.0), **kw)
    single = montecarlo.run({"mean": lambda x: x.mean(), "median": montecarlo.per_replicate(
        lambda x: location.median(x))}, lossfn.Gaussian(1.0), **kw)
    assert same(batched, single)


def test_chunk_bounds_memory_and_dtype_is_honoured():
    seen = []

    def spy(x):
        seen.append((x.shape[0], x.dtype))
        return x.mean(-1)

    montecarlo.run({"spy": spy}, lossfn.Gaussian(1.0), m=3, reps=1_000, block_size=100,
                   chunk_size=250, dtype=torch.float32)
    rows = [n for n, _ in seen[1:]]  # seen[0] is the 2-row probe
    assert seen[0][0] == 2 and max(rows) == 200 and sum(rows) == 1_000
    assert {d for _, d in seen} == {torch.float32}


def test_non_finite_estimator_is_flagged_and_does_not_poison_others():
    def sometimes_nan(x):
        return torch.where(x[..., 0] > 2.5, math.nan, x.mean(-1))

    study = montecarlo.run({"mean": "mean", "bad": sometimes_nan}, lossfn.Gaussian(1.0),
                           m=4, reps=5_000)
    assert bool(study["mean"].ok) and not bool(study["bad"].ok)
    assert study["mean"].variance.isfinite() and study["bad"].variance.isnan()


def test_study_is_a_mapping_with_bound_and_table():
    study = montecarlo.run({"mean": "mean", "median": "median"}, lossfn.Laplace(0.5), m=7,
                           reps=300, reference="median")
    assert list(study) == ["mean", "median"] and len(study) == 2
    assert study.bound == pytest.approx(0.25 / 7) and study.reference == "median"
    assert study["median"].efficiency.item() == 1.0
    assert isinstance(study["mean"], montecarlo.Row) and study["mean"].mean.dtype == torch.float64
    text = str(study)
    assert "eff. vs median" in text and "Cramér–Rao" in text and "median" in text.splitlines()[-1]
    with pytest.raises(KeyError, match="no estimator 'mode'"):
        study["mode"]


def test_progress_bar_on_request(capsys):
    montecarlo.run({"mean": "mean"}, lossfn.Gaussian(1.0), m=3, reps=400, block_size=100,
                   progress="study")
    assert "study" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,error,match", [
    ({"reps": 1}, ValueError, "reps"),
    ({"block_size": 20_000}, ValueError, "block_size"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"m": 0}, ValueError, "m must"),
    ({"dtype": torch.int64}, TypeError, "dtype"),
    ({"reference": "mode"}, ValueError, "reference 'mode'"),
    ({"noise": torch.distributions.Normal(0, 1)}, TypeError, "NoiseModel"),
    ({"estimators": {"x": "trimmed"}}, ValueError, "unknown built-in 'trimmed'"),
    ({"estimators": {"x": lambda x: x}}, ShapeError, "returned shape \\(2, 5\\)"),
    ({"estimators": {}}, TypeError, "non-empty"),
    ({"noise": lossfn.Gaussian(torch.ones(2))}, ValueError, "scalar noise parameters"),
])
def test_bad_arguments_raise_clearly(kwargs, error, match):
    args = {"estimators": {"mean": "mean"}, "noise": lossfn.Gaussian(1.0), "m": 5, "reps": 10}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        montecarlo.run(args.pop("estimators"), args.pop("noise"), **args)


def test_standard_errors_are_calibrated_across_seeds():
    # The spread of 40 independent studies' estimates must match their reported se.
    studies = [montecarlo.run({"mean": "mean", "median": "median"}, lossfn.Gaussian(1.0), m=9,
                              reps=1_000, seed=s) for s in range(40)]
    for field in ("bias", "variance", "mse", "efficiency"):
        values = torch.stack([s["median"]._asdict()[field] for s in studies])
        ses = torch.stack([s["median"]._asdict()[field + "_se"] for s in studies])
        ratio = (values.std() / ses.mean()).item()
        assert 0.65 < ratio < 1.45, (field, ratio)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_study_stays_on_the_device_and_is_chunk_invariant():
    kw = dict(m=9, reps=3_000, seed=1, block_size=500, device="cuda")
    a = montecarlo.run(EST, lossfn.Contaminated(0.1, 3.0), chunk_size=500, **kw)
    b = montecarlo.run(EST, lossfn.Contaminated(0.1, 3.0), chunk_size=10**6, **kw)
    assert a["median"].variance.device.type == "cuda" and same(a, b)
    cpu = montecarlo.run(EST, lossfn.Contaminated(0.1, 3.0), **{**kw, "device": "cpu"})
    # different streams, same law: the estimates agree within their standard errors
    for name in EST:
        diff = (a[name].variance.cpu() - cpu[name].variance).abs()
        assert diff < 5 * (a[name].variance_se.cpu() ** 2 + cpu[name].variance_se ** 2).sqrt()


def test_tiles_inside_the_builtins_never_change_a_bit(monkeypatch):
    from lossfn import _selection
    from lossfn.montecarlo import _estimators

    kw = dict(m=6, reps=3_000, seed=7, block_size=500, chunk_size=1_500)  # network-sized chunks
    whole = montecarlo.run(EST, lossfn.Gaussian(1.0), **kw)
    monkeypatch.setattr(_estimators, "TILE_ELEMENTS", 6 * 97)
    monkeypatch.setattr(_selection, "tile_rows", lambda m: 89)
    tiled = montecarlo.run(EST, lossfn.Gaussian(1.0), **kw)
    assert same(whole, tiled)
    # and the built-ins agree with the library functions on one tiled chunk
    x = torch.randn(1_000, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_estimators.mean(x), location.mean(x))


def test_an_estimator_with_trainable_parameters_is_evaluated_detached():
    w = torch.ones(5, dtype=torch.float64, requires_grad=True)
    kw = dict(m=5, reps=1_000, seed=2, block_size=300)
    with_grad = montecarlo.run({"w": lambda x: (x * w).mean(-1)}, lossfn.Gaussian(1.0), **kw)
    plain = montecarlo.run({"w": lambda x: x.mean(-1)}, lossfn.Gaussian(1.0), **kw)
    assert same(with_grad, plain)
    assert with_grad["w"].variance.grad_fn is None
