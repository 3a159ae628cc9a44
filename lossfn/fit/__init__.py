"""Batched regression fits: each dataset of a batch is fitted independently."""

from ._huber import HuberFit as HuberFit
from ._huber import huber as huber
from ._lad import LADFit as LADFit
from ._lad import lad as lad

__all__ = ["HuberFit", "LADFit", "huber", "lad"]
