"""Image recipe and builders (host side)."""
