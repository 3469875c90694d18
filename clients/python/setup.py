"""Builds the package with Warrant's protos compiled into it (`warrant_client._proto`), from
the repository's `proto/` folder (or `WARRANT_PROTO_DIR`), so the messages always match the
server they were built beside."""

import os
import pathlib
import re

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTOS = ("warrant/v1/authorizer.proto", "warrant/v1/admin.proto")


class BuildWithProtos(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc

        proto_dir = pathlib.Path(os.environ.get("WARRANT_PROTO_DIR", HERE.parent.parent / "proto"))
        out = pathlib.Path(self.build_lib) / "warrant_client" / "_proto"
        out.mkdir(parents=True, exist_ok=True)
        include = pathlib.Path(protoc.__file__).parent / "_proto"
        status = protoc.main([
            "grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
            f"--python_out={out}", f"--grpc_python_out={out}", *PROTOS,
        ])
        if status != 0:
            raise RuntimeError(f"protoc failed on {proto_dir}")
        # The generated modules import each other as top-level `warrant.v1`; inside this
        # package they are `warrant_client._proto.warrant.v1`.
        for folder in (out, out / "warrant", out / "warrant" / "v1"):
            (folder / "__init__.py").touch()
        for module in (out / "warrant" / "v1").glob("*.py"):
            text = module.read_text()
            text = re.sub(r"^from warrant\.v1 import", "from warrant_client._proto.warrant.v1 import",
                          text, flags=re.M)
            module.write_text(text)


setup(cmdclass={"build_py": BuildWithProtos})
