"""Generated gRPC messages and stubs; regenerate with `python -m edgeweave.runtime.proto.build`."""
