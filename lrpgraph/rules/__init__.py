"""Rule kernels and the adapters that register ATen ops; importing this package fills the registry."""

from . import (  # noqa: F401 - imported for their registrations
    absolute,
    attention,
    bilinear,
    elementwise,
    embedding,
    fallback,
    grouped,
    linear_ops,
    normalization,
    pooling,
    reindex,
    scatter,
    weighted,
)
