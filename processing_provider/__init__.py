"""The Slidewise Processing provider and its algorithms."""
