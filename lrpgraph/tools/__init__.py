"""Tools on top of the API: coverage reports, the built-in zoo, the command line, heatmaps."""
