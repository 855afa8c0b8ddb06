"""CloudWatch side work: pool metrics published each pass, declared alarms, fallback scaling."""
