"""``python -m asynq_aio.cli``: the same as the ``asynq-aio`` console script."""

from asynq_aio.cli.app import main

main()
