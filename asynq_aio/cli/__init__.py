"""The ``asynq-aio`` command line (typer)."""
