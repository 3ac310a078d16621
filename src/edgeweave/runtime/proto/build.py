"""Regenerate the protobuf/gRPC modules after editing a .proto here (needs grpcio-tools)."""

from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parents[3]
PROTOS = ("edgeweave.proto", "cluster.proto")

if __name__ == "__main__":
    raise SystemExit(protoc.main([
        "protoc", f"-I{SRC}", f"--python_out={SRC}", f"--grpc_python_out={SRC}",
        f"--pyi_out={SRC}", *(str(SRC / "edgeweave/runtime/proto" / p) for p in PROTOS),
    ]))
