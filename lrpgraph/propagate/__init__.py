"""Propagation: the plan (a rule per node), the memory schedule, the activation store, the forward, the walker."""
