"""Builds libkompakt (cargo, release profile: LTO, stripped, no tokenizer)
and puts it inside the `kompakt` package, so that `pip install
./bindings/python` gives a package that needs no KOMPAKT_LIB.

Environment: CARGO (the cargo to run, default `cargo`), CARGO_TARGET_DIR,
KOMPAKT_LIB (an already built libkompakt.so to bundle instead of building).
"""

import os
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def built_library():
    given = os.environ.get("KOMPAKT_LIB")
    if given:
        return given
    if not os.path.exists(os.path.join(ROOT, "Cargo.toml")):
        raise RuntimeError(
            "the kompakt repository (Cargo.toml) is not two levels above setup.py: build from a "
            "checkout, or set KOMPAKT_LIB to a built libkompakt.so"
        )
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [cargo, "build", "--release", "-p", "kompakt-capi"]
    print("building libkompakt:", " ".join(cmd))
    try:
        subprocess.run(cmd, cwd=ROOT, check=True)
    except FileNotFoundError:
        raise RuntimeError(f"`{cargo}` not found: install Rust (https://rustup.rs) to build libkompakt")
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    if not os.path.isabs(target):
        target = os.path.join(ROOT, target)
    for name in ("libkompakt.so", "libkompakt.dylib", "kompakt.dll"):
        p = os.path.join(target, "release", name)
        if os.path.exists(p):
            return p
    raise RuntimeError(f"cargo built no libkompakt in {target}/release")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = built_library()
        dest = os.path.join(self.build_lib, "kompakt", os.path.basename(lib))
        shutil.copyfile(lib, dest)
        os.chmod(dest, 0o755)


class BinaryDistribution(Distribution):
    """The wheel holds a native library: tag it for the platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
