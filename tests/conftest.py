"""Test-wide settings."""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # keep gRPC's C-core chatter out of test output
# One terminal width for every test process: rich wraps tables and messages at the width it
# finds, which differs between a terminal, a pipe and a pytest-xdist worker (80), and tests read
# words and paths out of that output.
os.environ["COLUMNS"] = "200"
