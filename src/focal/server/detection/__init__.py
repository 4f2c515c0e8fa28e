"""Face detection for the server: focal.server.detection.start builds it (see there)."""
