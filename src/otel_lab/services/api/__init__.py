"""The api service: items (with cache and worker), MicroTrace analyze, weather, the showcase."""
