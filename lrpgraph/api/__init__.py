"""The public surface: explain, its Explanation, targets, seeds, and the per-model traced-model cache."""
