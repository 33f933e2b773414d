"""Simulated agency systems for the demo and the tests."""
