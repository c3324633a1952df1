"""The watchdog thread and the evidence it writes: critical dumps, the flight recorder, cache state."""
