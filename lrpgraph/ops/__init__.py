"""The op table: what each ATen op does to relevance — registry, adapters, rule kernels.

Importing this package fills the registry; each module declares its op classes next to their kernels.
"""

from . import (  # noqa: F401 - imported for their registrations
    absolute,
    attention,
    bilinear,
    elementwise,
    embedding,
    fallback,
    grouped,
    layer_ops,
    layer_rules,
    normalization,
    pooling,
    reindex,
    scatter,
)
