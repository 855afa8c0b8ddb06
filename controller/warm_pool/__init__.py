"""spec.warmPool: the pure rules (rules.py), the Auto Scaling calls (api.py) and the step
that keeps the warm pool in place each pass (step.py)."""
