"""Import every lrpgraph module, list the presets and count the zoo `lrpgraph coverage` runs, as installed (run from
outside the source tree)."""

import importlib
import json
import pkgutil

import lrpgraph
from lrpgraph.tools.zoo import architectures

modules = sorted(m.name for m in pkgutil.walk_packages(lrpgraph.__path__, "lrpgraph.") if m.name != "lrpgraph.__main__")
for name in modules:
    importlib.import_module(name)
found = {"file": lrpgraph.__file__, "modules": modules, "presets": lrpgraph.preset_names(), "zoo": len(architectures())}
print(json.dumps(found))
