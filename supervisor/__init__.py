"""The parent side: queue, scheduling, watchdog. Never imports document libraries."""
