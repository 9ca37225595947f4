"""Integrations with other frameworks, one module each (``asynq_aio.contrib.fastapi``).

Nothing is imported here: each module needs its framework installed (an optional extra, e.g.
``pip install 'asynq-aio[fastapi]'``), and ``import asynq_aio`` must work without any of them.
"""
