"""Logging setup shared by the entry points."""
import logging

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def setup_logging(level: str = "INFO") -> None:
    """Root logging to stderr at level (the entry point reads PREDMESH_LOG_LEVEL into its settings)."""
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
