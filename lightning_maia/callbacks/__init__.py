"""Lightning callbacks that run the interpretability agent where people train."""
