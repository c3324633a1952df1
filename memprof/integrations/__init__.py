"""Integrations with the app's libraries: SQLAlchemy, HTTP sessions, OpenTelemetry."""
