"""The controller's HTTP face: agent reports, /metrics, /status and /healthz."""
