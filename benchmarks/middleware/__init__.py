"""In-process middleware benchmarks: each case is an app factory pair ``<case>_base`` / ``<case>_memprof``."""
