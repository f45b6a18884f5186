"""Circuits over one node table (nodes.py, ownership.py): attribution, groups with intervals, discovery."""
