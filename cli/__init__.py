"""The `predmesh` console script: one subcommand per part of the mesh."""
