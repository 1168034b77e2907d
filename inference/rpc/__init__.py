"""The RPC edge: the gRPC server, its servicers (predmesh.v1, OIP, analytics), error mapping, auth, reflection."""
