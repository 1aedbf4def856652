"""State stores: memory (tests, hunt), sqlite (embedded default), redis (shared by replicas)."""
