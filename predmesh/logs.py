"""Logging setup shared by the entry points."""
import logging
import os


def setup_logging(level: str | None = None) -> None:
    """Root logging to stderr at PREDMESH_LOG_LEVEL (INFO by default)."""
    logging.basicConfig(
        level=(level or os.environ.get("PREDMESH_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
