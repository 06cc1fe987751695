"""Ignition config spec 3.0-3.6: model, parsing, validation, merging and sources. Standard library only."""
