"""Side-by-side benchmarks of spiffe-sidecar against haproxy, nginx and stunnel.

A package (not loose scripts) so that `bench/run.py` and its pieces share one
process-management and accounting layer; see bench/README.md.
"""
