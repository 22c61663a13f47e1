"""One torch.export at a time in this process, and no symbolic-size arithmetic while one runs.

torch.export keeps global state, and swaps a model's parameters while it runs; its symbolic-shape dispatch is
global too (not per thread), so arithmetic on another graph's symbolic sizes (analyses, plans, shapes) waits for it.
"""

import threading

EXPORT_LOCK = threading.Lock()
