"""lrpgraph's version: what `lrpgraph --version` prints and `lrpgraph.__version__` holds."""

__version__ = "0.1.0"
