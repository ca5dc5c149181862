"""The runtime shared by the train, eval and infer binaries and the pipeline.

Mesh and partitioning, checkpoints and initial-checkpoint loading, batched inference and
scoring, task evaluation, metrics writers and gin plumbing. Nothing here is about training.
"""
