"""The api service: items (seed 000), analyze (001), weather and the showcase endpoints (004)."""
