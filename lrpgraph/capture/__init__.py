"""Capture: what does the model compute? torch.export into a Graph of ATen ops; knows nothing of LRP."""
