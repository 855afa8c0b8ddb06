"""What the controller and the agent share: the wire contract, durations, logging, async plumbing.

This package imports nothing else of the project (import-linter keeps it so), so either daemon
can load it without pulling in the other.
"""
