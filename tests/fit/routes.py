"""The two routes of ``fit.ols``, ``fit.standardized``, ``fit.lad`` and ``fit.huber`` on the CPU, for the fit tests.

A test module runs every test on both by importing the autouse fixture:
``from routes import route``.
"""

import pytest

import lossfn._native

#: "native": the C kernels of lossfn._native (one predictor's moments, the
#: Gram matrices of several, the LAD walk and the Huber iteration), which fits take by
#: default on the CPU;
#: "torch": the pure-torch path, which vmap, autograd and accelerators take.
ROUTES = ["native", "torch"]


@pytest.fixture(autouse=True, params=ROUTES)
def route(request, monkeypatch):
    """Force one route. The native one must be there: CI has a C compiler, so a
    kernel that fails to build fails these tests instead of skipping them."""
    if request.param == "torch":
        monkeypatch.setenv("LOSSFN_NATIVE", "0")
    else:
        monkeypatch.delenv("LOSSFN_NATIVE", raising=False)
        assert lossfn._native.available(), "the native kernels did not build (see the warning)"
    return request.param
