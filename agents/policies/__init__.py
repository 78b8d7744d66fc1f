"""Household energy-management policies."""
