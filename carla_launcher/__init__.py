"""carla-launcher: CARLA server on a remote GPU box, agent local, compose files in sync."""

__version__ = "0.1.0"
