"""Studies of inverted images: independent scores, evaluations against real images, probes and experiments."""
