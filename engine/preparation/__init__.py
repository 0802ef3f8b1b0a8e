"""Data preparation jobs (Processing group "Data preparation")."""
