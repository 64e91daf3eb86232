"""saltcd: health-gated rolling deployments of Docker images, driven by Salt events."""

__version__ = "0.1.0"
