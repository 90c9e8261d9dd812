"""Prompt strategies: how a user's stored prompt state becomes a filled prompt for the RLM."""
