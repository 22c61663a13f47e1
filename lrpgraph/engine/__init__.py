"""The engine: one call orchestrated over capture/ and propagate/ — its trace (kept in memory and on disk, exported or
recorded) and its walk (the forward, walks split under a memory budget, PA-LRP's outputs, absLRP's two passes)."""
