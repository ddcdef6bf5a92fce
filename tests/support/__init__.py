"""Test support shared by the test suites and the bench: in-memory ports, scripted providers,
the process launcher (procs, envoy) and the fake upstreams (upstream, fast_upstream, otlp)."""
