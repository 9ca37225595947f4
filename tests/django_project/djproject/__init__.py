"""A minimal Django 6 project whose TASKS backend is asynq-aio's (used by tests/test_django_backend.py)."""
