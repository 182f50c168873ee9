"""Image sizes and build times: today's Dockerfiles vs a baseline revision's, built in one run.

Both sets are built here with buildah on the same local Debian base and local torch source as
tests/images (the registry's python slim image cannot be pulled here), so the ratio compares the
Dockerfiles, not the bases. The baseline's Dockerfiles are read from git (`--baseline REF`) and
pointed at the same base and torch index; the build context is today's tree for both.
Prints, per image, the size of each and their ratio, and the seconds of each build (the first
build of a run is cold unless the layer cache already holds it; `--cached` rebuilds today's
images once more to show the cached time). Removes every image it built.
Usage: python bench/bench_images.py [--baseline REF] [--cached] (root, buildah, mmdebstrap, podman)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import images  # noqa: E402

# The last revision whose Dockerfiles kept everything pip installed (before issue 24's cuts).
DEFAULT_BASELINE = "4a200e9"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def baseline_dockerfile(ref: str, image: images.ImageSpec, base: str, folder: Path) -> Path:
    """The image's Dockerfile at `ref`, its literal base and torch index made local."""
    text = subprocess.run(["git", "show", f"{ref}:{image.dockerfile}"], cwd=ROOT, text=True,
                          capture_output=True, check=True).stdout
    text = re.sub(r"^FROM python:\S+", f"FROM {base}", text, flags=re.MULTILINE)
    text = text.replace(f"--index-url {TORCH_CPU_INDEX}",
                        f"--index-url file://{images.INDEX_MOUNT}/simple")
    path = folder / f"{image.name}.Dockerfile"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help="git revision whose Dockerfiles are the baseline")
    parser.add_argument("--cached", action="store_true",
                        help="rebuild today's images once more (cached build time)")
    options = parser.parse_args()
    reason = images.missing_prerequisites()
    if reason:
        print(f"bench_images: skipped: {reason}")
        return 0
    started = time.monotonic()
    base = images.ensure_base()
    print(f"base {base}: {images.image_size(base) / 1e6:.0f} MB "
          f"(ready in {time.monotonic() - started:.0f} s)")
    wheel = images.find_torch_wheel()
    assert wheel is not None
    built: list[str] = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-images-") as scratch:
        folder = Path(scratch)
        index = images.torch_index(folder / "index", wheel)
        try:
            for image in images.IMAGES:
                now_tag, old_tag = f"{image.tag}-bench", f"{image.tag}-baseline"
                built += [now_tag, old_tag]
                seconds = images.build(image, base=base, index_dir=index, tag=now_tag)
                cached = (images.build(image, base=base, index_dir=index, tag=now_tag)
                          if options.cached else float("nan"))
                old_seconds = images.build(
                    image, base=base, index_dir=index, tag=old_tag,
                    dockerfile=baseline_dockerfile(options.baseline, image, base, folder))
                rows.append((image.name, images.image_size(now_tag), images.image_size(old_tag),
                             seconds, cached, old_seconds))
        finally:
            images.remove(built)
    print(f"\n{'image':<10} {'now MB':>8} {'baseline MB':>12} {'ratio':>6} "
          f"{'build s':>8} {'cached s':>9} {'baseline s':>11}")
    for name, now, old, seconds, cached, old_seconds in rows:
        print(f"{name:<10} {now / 1e6:>8.0f} {old / 1e6:>12.0f} {now / old:>6.2f} "
              f"{seconds:>8.0f} {cached:>9.0f} {old_seconds:>11.0f}")
    total_now, total_old = sum(row[1] for row in rows), sum(row[2] for row in rows)
    print(f"{'all':<10} {total_now / 1e6:>8.0f} {total_old / 1e6:>12.0f} "
          f"{total_now / total_old:>6.2f}   (baseline: Dockerfiles at {options.baseline})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
