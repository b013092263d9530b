"""Example environments in the FTRL row format, packaged for the demo and tests."""
