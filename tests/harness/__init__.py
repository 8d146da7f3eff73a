"""Test harnesses: the real things the tests drive (a box, a dockerd, the compose loader) and
their helpers. Modules with fixtures are registered as pytest plugins in tests/conftest.py, so
test modules import only the plain names (classes, functions) they use."""
