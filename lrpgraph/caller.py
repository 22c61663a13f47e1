"""Warnings that point at the user's line: the first frame outside lrpgraph, however deep the call that warns."""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

_PACKAGE = os.path.join(Path(__file__).parent, "")  # with its separator: not a sibling "lrpgraph_x/"


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` at the first frame outside lrpgraph: the user's call."""
    frame, level = inspect.currentframe(), 0
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
