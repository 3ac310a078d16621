"""Regenerate the protobuf/gRPC modules after editing any ``.proto`` in this folder (needs
grpcio-tools): ``python -m edgeweave.train.wire.build``."""

from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parents[3]

if __name__ == "__main__":
    protos = sorted(str(p) for p in Path(__file__).resolve().parent.glob("*.proto"))
    raise SystemExit(protoc.main([
        "protoc", f"-I{SRC}", f"--python_out={SRC}", f"--grpc_python_out={SRC}",
        f"--pyi_out={SRC}", *protos,
    ]))
