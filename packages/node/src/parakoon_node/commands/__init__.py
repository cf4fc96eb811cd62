"""The ``parakoon`` command line: ``cli`` (the entry point) and one module per subcommand."""
