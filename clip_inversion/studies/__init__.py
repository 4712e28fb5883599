"""Studies of inverted images: independent judges, attribute probes, experiments and their reports."""
