"""Testing helpers: the pytest plugin and the reproduction harness."""
