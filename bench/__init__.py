"""Benchmarks of the course: speed and size targets, measured as ratios in one run."""
