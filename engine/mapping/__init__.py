"""Mapping jobs (Processing group "Mapping")."""
