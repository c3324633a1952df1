"""The records memprof writes: tags and versions (:mod:`.versions`, no pydantic), their pydantic models
(:mod:`.models`) and the generated reference (``python -m memprof.records.models docs/schema``)."""
