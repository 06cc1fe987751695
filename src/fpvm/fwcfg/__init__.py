"""QEMU fw_cfg: the protocol and the transports that reach the device. Standard library only."""
