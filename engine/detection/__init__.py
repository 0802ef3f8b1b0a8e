"""Detection and encoder pre-training jobs (Processing group "Detection")."""
