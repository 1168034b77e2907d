"""The Envoy REST gateway: descriptor build, OpenAPI generation, envoy.yaml rendering and the launcher."""
