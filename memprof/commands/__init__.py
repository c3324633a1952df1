"""One module per CLI subcommand, each a plain function; :data:`memprof.cli.COMMANDS` lists them."""
