"""The watchdog (a job of memprof's background thread) and the evidence it writes: critical dumps, the
flight recorder, cache state."""
