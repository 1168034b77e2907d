"""predmesh dashboard (Panel): store (talks to the server through the SDK) / views (layout) / app (serving)."""
