"""The two routes of the one-predictor moments, for the fit tests."""

import pytest

import lossfn._native

#: "native": the C kernel (lossfn._native), which fits take by default on the CPU;
#: "torch": the pure-torch path, which vmap, autograd and accelerators take.
ROUTES = ["native", "torch"]


def use_route(route, monkeypatch):
    """Force one route. The native one must be there: CI has a C compiler, so a
    kernel that fails to build fails these tests instead of skipping them."""
    if route == "torch":
        monkeypatch.setenv("LOSSFN_NATIVE", "0")
    else:
        monkeypatch.delenv("LOSSFN_NATIVE", raising=False)
        assert lossfn._native.available(), "the native kernels did not build (see the warning)"
    return route
