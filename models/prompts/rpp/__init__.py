"""RPP (Mao et al., 2024): per-user prompt sentences, one slot at a time, chosen by actor-critic
agents from a user state the RLM computes, and refined per user on their own selection items."""
