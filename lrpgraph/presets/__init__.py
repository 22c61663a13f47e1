"""Which rule where: rule sets (op class, op, module and first-layer tables) and the shipped presets."""
