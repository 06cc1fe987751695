"""The guest agent: Ignition sources -> plan of typed actions -> apply on a target root.

Standard library only: it runs on the FreeBSD base system's python3 at boot.
"""
