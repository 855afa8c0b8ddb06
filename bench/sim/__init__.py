"""A discrete-event simulator: the same day of recording demand, served by several autoscaling
policies (the classic CloudWatch recipe, a jitsi-autoscaler-like one, AWS target tracking, this
project's real planner, and an oracle lower bound), scored on missed recordings and
instance-hours.

Run it with `python -m bench.sim` (or `make sim`); `--help` lists the knobs.
"""
