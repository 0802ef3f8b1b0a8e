"""Susceptibility jobs and methods (Processing group "Susceptibility")."""
