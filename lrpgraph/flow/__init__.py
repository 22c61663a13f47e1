"""Graph facts: where relevance flows, node roles, normalisation scales, positional sources — found once per graph."""
