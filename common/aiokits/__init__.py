"""Async plumbing shared by both daemons: named guarded tasks and sleeps on an injected clock."""
