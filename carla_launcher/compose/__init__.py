"""Compose files: find them, understand their include/extends graph, derive distributed variants."""
