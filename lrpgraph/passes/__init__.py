"""Canonicalisation passes over a traced graph: rewrites and facts the rule choice depends on."""
