"""Packages by discovery, plus the data they read: the top-level `rules/` folder ships as `lrpgraph.presets.tables`,
the zoo's table `lrpgraph/tools/zoo.toml` beside the module that reads it.

(pyproject's `packages.find` cannot add a package mapped from another folder, so discovery runs here.)
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["lrpgraph", "lrpgraph.*"]), "lrpgraph.presets.tables"],
    package_dir={"lrpgraph.presets.tables": "rules"},
    package_data={"lrpgraph.presets.tables": ["*.toml"], "lrpgraph.tools": ["zoo.toml"]},
)
