"""The test project's app: a few @task functions and the views that enqueue them."""
