"""Circuit discovery over heads and MLPs (in progress: see graph.py)."""
