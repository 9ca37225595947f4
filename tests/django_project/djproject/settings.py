"""Settings for the Django test project. Where Redis is, which Asynq queue the ``default`` Django
queue maps to and where tasks write their side effects come from the environment the test sets."""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "djproject.urls"
INSTALLED_APPS = ["shop"]
DATABASES: dict[str, dict[str, str]] = {}
LOGGING_CONFIG = None

TASKS = {
    "default": {
        "BACKEND": "asynq_aio.contrib.django.AsynqBackend",
        "QUEUES": ["default", "slow"],
        "OPTIONS": {
            "url": os.environ["ASYNQ_TEST_REDIS_URL"],
            "queue_map": {
                "default": os.environ["ASYNQ_TEST_QUEUE"],
                "slow": os.environ["ASYNQ_TEST_QUEUE"] + "-slow",
            },
            "max_retry": 0,  # a task that raises is FAILED at once (the test waits for it)
            "retention": 600,
        },
    }
}
