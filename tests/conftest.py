"""Test-wide settings."""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # keep gRPC's C-core chatter out of test output
