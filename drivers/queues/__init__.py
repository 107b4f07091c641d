"""AI job queue drivers: Slurm, Kubernetes, webhook."""
