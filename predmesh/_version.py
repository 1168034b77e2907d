"""The one version of predmesh: the project (`predmesh --version`) and the predmesh-client package both read it."""
__version__ = "0.3.0"
