"""The ``geoaudit`` command line (typer). Commands parse arguments and call the engine."""
