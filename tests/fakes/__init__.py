"""Test doubles shared by the test suites (e.g. `tests.fakes.upstream.FakeUpstream`)."""
