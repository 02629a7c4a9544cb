"""Training: the loop, the fast step, resumable state and run orchestration (``run``)."""
