"""Recording: launch or attach, profile, and leave a run directory behind."""
