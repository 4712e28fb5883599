"""Studies of inverted images: independent judges, evaluations against real images, attribute probes, experiments."""
