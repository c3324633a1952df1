"""What keeps memprof safe inside someone else's process: isolation of its own failures, the guards
(circuit breaker, overhead guard), runtime control (kill switch, overrides), targeted tokens, redaction."""
