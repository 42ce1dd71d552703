"""Support modules for tests that need more than a fixture: the fault suite's topology and proxy."""
