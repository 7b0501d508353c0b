"""The `exsnn` command line: one small module per subcommand, assembled in `main`."""
