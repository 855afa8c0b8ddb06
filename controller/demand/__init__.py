"""Demand: what a pool was asked for, per minute, measured by the controller itself (recordings
started, busy recorders) and by jicofo (requests that found no recorder); kept in memory,
published to CloudWatch and read back from it (docs/readiness.md)."""
