"""Small layers shared by every model in minivid: sinusoidal timestep embeddings (``timestep_embedding``),
the MLP that embeds them (``TimestepEmbedding``), and the check of class labels (``check_labels``)."""

from .embeddings import TimestepEmbedding, check_labels, timestep_embedding

__all__ = ["timestep_embedding", "TimestepEmbedding", "check_labels"]
