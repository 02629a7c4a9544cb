"""Storage: tensor files, checkpoints, run records, plots and progress bars."""
