"""The bridge: moves, correlates, retries, parks, dead-letters and tracks messages between the systems."""
