"""The model: load, build the demo, estimate memory, train, merge, quantize."""
