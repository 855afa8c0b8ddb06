"""Fleet operations: recycling tired recorders, rolling out a new image, and launch failures.

Each family has its pure rules (recycle.py, rollout.py, launches.py) beside the I/O that
feeds them (*_step.py) and the rollout command (rollout_cli.py).
"""
