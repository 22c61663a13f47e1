"""Preset tables, one TOML file per method; installed as the package `lrpgraph.presets.tables`."""
