"""Host launcher for fpvm machines and helpers for podman machine users (host side)."""
