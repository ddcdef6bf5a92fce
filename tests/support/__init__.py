"""Test support shared by the test suites: in-memory ports, scripted providers."""
