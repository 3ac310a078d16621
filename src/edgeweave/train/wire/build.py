"""Regenerate the protobuf/gRPC modules after editing fl.proto (needs grpcio-tools):
``python -m edgeweave.train.wire.build``."""

from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parents[3]

if __name__ == "__main__":
    raise SystemExit(protoc.main([
        "protoc", f"-I{SRC}", f"--python_out={SRC}", f"--grpc_python_out={SRC}",
        f"--pyi_out={SRC}", str(SRC / "edgeweave/train/wire/fl.proto"),
    ]))
