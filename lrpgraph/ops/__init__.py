"""The op table: what each ATen op does to relevance — registry, adapters, rule kernels.

Importing this package imports every module in it, and so fills the registry: a new op class is one
new file here (declare it, register its kernels and its ATen ops), nothing else changes.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
