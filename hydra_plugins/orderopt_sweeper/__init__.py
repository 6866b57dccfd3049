"""orderopt's Hydra sweeper: ``hydra/sweeper=orderopt`` searches schedules and launches the full runs as Hydra jobs."""
