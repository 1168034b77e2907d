"""Models and their store: artifacts, manifests, verified loading, the registry of serving versions, runtimes."""
