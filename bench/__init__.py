"""`make bench`: saltcd's push-to-running latency, rollout overhead, no-op cost,
event throughput and fleet scaling, measured on the sandbox (see docs/performance.md)."""
