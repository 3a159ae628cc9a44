"""Batched regression fits: each dataset of a batch is fitted independently."""

from ._lad import LADFit as LADFit
from ._lad import lad as lad

__all__ = ["LADFit", "lad"]
