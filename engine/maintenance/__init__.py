"""Engine checks (Processing group "Engine")."""
