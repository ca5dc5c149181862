"""Training: mesh and partitioning, optimizer, loss, train state, checkpoints, the loop."""
