"""Recovery: restore, salvage, drills, backup-vs-live diff and progress repair."""
