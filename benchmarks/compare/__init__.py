"""``make bench-compare``: one FastAPI + SQLAlchemy (SQLite) endpoint under uvicorn, bare and behind memprof
and the tools users would pick instead, driven by a bounded load generator; ratios to bare."""
