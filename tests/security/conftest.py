"""The security suite. Tests marked `soak` are the long variants (`make soak`)."""
