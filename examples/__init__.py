"""Runnable examples. A regular package, so ``examples.tutorial_worker:mux`` imports from the project root."""
