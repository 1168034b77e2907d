"""Processes: what one server process assembles around the server (persistence) and the multi-process group."""
