"""Slidewise dialogs (they gather parameters; algorithms do the work)."""
