"""One module per CLI subcommand. Each module defines ``register(app)``; :mod:`memprof.cli` finds them."""
