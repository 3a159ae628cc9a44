import pytest
import torch


@pytest.fixture
def gen():
    """A fresh, seeded generator: tests never touch the global RNG."""
    return torch.Generator().manual_seed(1234)
