"""The demo: an example FastAPI + SQLAlchemy app with planted memory problems, and a runner that profiles
it under bounded load and diagnoses it (``memprof demo`` / ``make demo``)."""
