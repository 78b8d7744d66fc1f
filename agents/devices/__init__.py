"""Household devices, vectorised over households as torch tensors."""

from agents.devices.battery import Battery, DeviceError

__all__ = ["Battery", "DeviceError"]
