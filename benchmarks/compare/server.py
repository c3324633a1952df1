"""Serve one variant under uvicorn on 127.0.0.1: ``python -m benchmarks.compare.server VARIANT PORT DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from benchmarks.compare.variants import build


def main() -> None:
    variant, port, data_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    data_dir.mkdir(parents=True, exist_ok=True)
    app = build(variant, data_dir)
    # uvicorn's defaults: uvloop and httptools when installed (the bench extra installs them)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
