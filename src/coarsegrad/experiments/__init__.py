"""The paper's experiments: trial functions, a process-pool runner, reports."""
