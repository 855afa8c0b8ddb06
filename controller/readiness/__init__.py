"""Readiness: how many free recorders to hold now, learned from the pool's demand history
and its measured boot time (docs/readiness.md). Pure: no I/O, no clock of its own."""
