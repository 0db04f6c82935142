"""The ``beyondkd`` command line (one module per subcommand; see :mod:`beyondkd.cli.main`)."""
