"""The op table: what each ATen op does to relevance — its entry (adapter and facts), op classes, rule kernels.

Importing this package imports every module in it, and so fills the table: a new op class is one
new file here (declare it, register its kernels, and enter its ATen ops with their facts), nothing
else changes. The table is checked against the ops' schemas once every module has entered its ops.
"""

import importlib
import pkgutil

from .table import check

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
check()
