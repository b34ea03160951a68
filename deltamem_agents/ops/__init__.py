"""Math core: gated delta-rule scans with row-wise gates (read before write).

``naive_delta_scan`` is the reference definition, ``chunk_delta_scan`` the
parallel form, ``delta_step`` one decode step, ``delta_scan`` picks among them.
"""

from .chunk import chunk_delta_scan
from .dispatch import delta_scan
from .naive import naive_delta_scan
from .recurrent import delta_step

__all__ = ["naive_delta_scan", "chunk_delta_scan", "delta_step", "delta_scan"]
