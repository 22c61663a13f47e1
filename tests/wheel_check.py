"""Import every lrpgraph module and list the presets, as installed (run from outside the source tree)."""

import importlib
import json
import pkgutil

import lrpgraph

modules = sorted(m.name for m in pkgutil.walk_packages(lrpgraph.__path__, "lrpgraph.") if m.name != "lrpgraph.__main__")
for name in modules:
    importlib.import_module(name)
print(json.dumps({"file": lrpgraph.__file__, "modules": modules, "presets": lrpgraph.preset_names()}))
