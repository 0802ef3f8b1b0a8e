"""Slidewise engine."""
