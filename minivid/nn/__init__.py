"""Small layers shared by every model in minivid (timestep embeddings, normalisation helpers)."""

from .embeddings import TimestepEmbedding, timestep_embedding

__all__ = ["timestep_embedding", "TimestepEmbedding"]
