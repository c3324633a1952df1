"""``python -m memprof``: the same as the ``memprof`` command."""

from memprof.cli import main

main()
