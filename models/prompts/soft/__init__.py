"""Soft prompts (PeaPOD-style): per-user prompt vectors composed from a shared pool by attention
from the user's interest embedding, refined per user by a few gradient steps, RLM frozen."""
