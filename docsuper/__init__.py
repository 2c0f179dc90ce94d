"""docsuper: one fresh child process per document job, under a hard memory cap."""

__version__ = "0.1.0"
