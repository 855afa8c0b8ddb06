"""The autoscaling policies under comparison, each driving the same simulated `SimulatedWorld`."""
