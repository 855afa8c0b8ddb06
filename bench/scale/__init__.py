"""Performance of the real controller at 1,000 and 10,000 instances: `python -m bench.scale`."""
