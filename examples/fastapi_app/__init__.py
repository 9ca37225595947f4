"""A FastAPI app that enqueues from a route and runs an asynq-aio worker in its lifespan."""
