"""The original SIRST-5K scripts' way of working, re-implemented for timing only.

    .venv/bin/python benchmarks/original_scripts.py [--images 427 854] [--keep]

github luy0222/SIRST-5K, codes/Mix_Rot: `add_noise.py` (noise transfer), `rot_patch.py` (negative
images) and `rot_mask.py` (negative masks), run one after the other on a folder of 256x256
training images. What makes them slow is kept as they do it:
  - one PNG file per sample in and out; every negative re-opens and re-decodes its source PNG;
  - add_noise loads the whole set into memory as float64 [3, 256, 256] tensors first, looks each
    image up with `list.index` and blends in float64;
  - rot_patch / rot_mask pair each line of coordinates.txt with its image by the test
    `file.index(line) == imgNames_s.index(img)` inside a double loop over lines and images
    (quadratic in loop iterations, each `index` call linear: cubic list scans in all);
  - each negative is a PIL crop, FLIP_LEFT_RIGHT transpose, rotate(90 k), a new image, two
    pastes and a PNG save (PIL's default compression), for the image and again for the mask.
`cv2.imwrite` of add_noise is OpenCV's where it can be imported (`--cv2-from DIR`), else a PIL
PNG save at OpenCV's default compression level (1), ~2.5x slower (measured against the original
add_noise.py). Imports are done before the clock starts. torchvision's Resize
is F.interpolate (bilinear), skipped for images already 256x256 as torchvision skips them. The
scripts need coordinates.txt (target centres `(x, y)` per image, one line per image in sorted
order) made beforehand; it is written here, untimed. The recipe is SIRST-5K's: m = 0.1, 32-px mirrored negatives, masks.

Each run (one --images value) happens in a fresh process so its peak memory is its own.
Prints per stage: seconds, samples, samples/s, and the peak RSS.

How close this is to the scripts themselves: `--real DIR` runs the original add_noise.py,
rot_patch.py and rot_mask.py (a checkout's codes/Mix_Rot; they are not part of this repository)
on the same input, each a `python SCRIPT` process in a folder laid out as they expect, with
add_noise's `M = [0.1, ..., 0.5]` cut to `M = [0.1]` (the recipe; as published it writes five
mixes). They need torch, torchvision, einops, opencv and pillow: `--real-deps DIR` goes on their
PYTHONPATH (e.g. `pip install --target DIR --no-deps einops opencv-python-headless`). Where
torchvision cannot be imported (PyPI has only its CUDA build, which does not load beside a CPU
torch), a stand-in with the two things the scripts use is put first on the path: `Resize` as
torchvision's (an image already at the size is returned as it is; else bilinear, antialiased)
and `make_grid` (only called for batches, which the scripts never pass). Their times include
each script's imports; the imports alone are timed too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import numpy as np

M = [0.1]


# ---------------------------------------------------------------- add_noise.py


def tensor2img(tensor):
    """mmcv-style tensor2img: squeeze, clamp to [0, 1], CHW RGB -> HWC BGR, x255, round, uint8."""
    t = tensor.squeeze(0).squeeze(0).float().detach().cpu().clamp_(0, 1)
    img = t.numpy()
    img = np.transpose(img[[2, 1, 0], :, :], (1, 2, 0))
    return (img * 255.0).round().astype(np.uint8)


def imwrite_bgr(path: str, img_bgr: np.ndarray) -> None:
    """cv2.imwrite where opencv can be imported (e.g. PYTHONPATH=--real-deps DIR); else its stand-in,
    a PIL PNG save at OpenCV's default compression (1), which measured ~2.5x slower than cv2's."""
    if _cv2 is not None:
        _cv2.imwrite(path, img_bgr)
        return
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(img_bgr[:, :, ::-1])).save(path, compress_level=1)


try:
    import cv2 as _cv2
except ImportError:
    _cv2 = None


def resize_like_torchvision(t, size=(256, 256)):
    import torch.nn.functional as F

    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]


def add_noise(image_path: Path, noise_path: Path, save_root: Path) -> int:
    import torch
    from PIL import Image

    save = {m: save_root / "mix" / str(m) for m in M}
    for p in save.values():
        p.mkdir(parents=True, exist_ok=True)
    img_names_l = sorted(os.listdir(image_path))
    images = []
    for name in img_names_l:
        img = Image.open(image_path / name)
        t = torch.from_numpy(np.array(img) / 255.0).permute(2, 0, 1)
        images.append(resize_like_torchvision(t))
    noises = []
    for name in sorted(os.listdir(noise_path)):
        img = Image.open(noise_path / name)
        t = torch.from_numpy(np.array(img) / 255.0).permute(2, 0, 1)
        noises.append(resize_like_torchvision(t))
    noises = torch.stack(noises)
    n = 0
    for i in img_names_l:
        for m in M:
            index_i = img_names_l.index(i)
            infuse = m * noises + (1 - m) * images[index_i]
            imwrite_bgr(str(save[m] / i), tensor2img(infuse))
            print(i, m, "done")
            n += 1
    return n


# ---------------------------------------------------------------- rot_patch.py / rot_mask.py


def rot_patch_32(save_path: Path, image_path: Path, coordinate, k: int, index: int, mode: str) -> None:
    from PIL import Image

    img = Image.open(image_path)
    width, height = img.size
    base_name = os.path.splitext(os.path.basename(image_path))[0]
    x, y = coordinate
    # The script's nine-way case analysis, written as its per-axis rule.
    ax = 0 if x < 32 else 224 if x > 224 else x - 16
    ay = 0 if y < 32 else 224 if y > 224 else y - 16
    a = (ax, ay, ax + 32, ay + 32)
    patch = img.crop(a)
    flipped = patch.transpose(Image.FLIP_LEFT_RIGHT).rotate(90 * k)
    new_img = Image.new(mode, (width, height))
    new_img.paste(img, (0, 0))
    new_img.paste(flipped, a)
    new_img.save(os.path.join(save_path, f"{base_name}_k{k}_j{index}.png"))


def rot_all(image_path: Path, coordinates: Path, save_path: Path, mode: str, rot=None) -> int:
    """rot_patch.py's / rot_mask.py's main loop; `rot` replaces rot_patch_32 (for timing the loop alone)."""
    rot = rot or rot_patch_32
    save_path.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(coordinates) as fh:
        file = fh.readlines()
        img_names_l = sorted(os.listdir(image_path))
        img_names_s = [item[:6] for item in img_names_l]
        for line in file:
            for img in img_names_s:
                if file.index(line) == img_names_s.index(img):
                    str_list = line.strip(" ")
                    str_list = [eval(t) for t in str_list.split("|")]  # noqa: S307 - as the script
                    for j in str_list:
                        for k in range(4):
                            rot(save_path, image_path / f"{img_names_s[img_names_s.index(img)]}.png",
                                         str_list[str_list.index(j)], k, str_list.index(j), mode)
                            print("save image", img_names_s[img_names_s.index(img)], save_path)
                            n += 1
    return n


# ---------------------------------------------------------------- inputs and one run


def make_input(n_images: int, root: Path) -> Path:
    """n train images (RGB PNG, 256x256, six-digit ids), their masks, one noise PNG, coordinates.txt."""
    from PIL import Image

    from sirst5k.formats.imageio import read_mask
    from sirst5k.method.targets import target_centers

    base = C.sirst_set(copies=-(-n_images // 341), train_only=True)
    ids = sorted(p.stem for p in (base / "images").glob("*.png"))[:n_images]
    if len(ids) < n_images:
        sys.exit(f"only {len(ids)} train images available")
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("images", "masks", "noise"):
        (root / sub).mkdir(parents=True)
    lines = []
    for sid in ids:
        os.link(base / "images" / f"{sid}.png", root / "images" / f"{sid}.png")
        os.link(base / "masks" / f"{sid}.png", root / "masks" / f"{sid}.png")
        mask, _ = read_mask(base / "masks" / f"{sid}.png")
        lines.append("|".join(f"({x}, {y})" for y, x in target_centers(mask)))
    (root / "coordinates.txt").write_text("".join(f"{ln}\n" for ln in lines))
    ref = C.data_root() / "sirst5k-reference" / "inputs" / "noise" / "noise.png"
    if ref.is_file():
        Image.open(ref).convert("RGB").save(root / "noise" / "noise.png")
    else:  # a flat-ish 16x16 patch if the reference demo noise is absent
        rng = np.random.default_rng(0)
        Image.fromarray(np.repeat(rng.normal(100, 3, (16, 16, 1)).clip(0, 255).astype(np.uint8), 3, 2)).save(
            root / "noise" / "noise.png")
    return root


def run_once(n_images: int, keep: bool) -> dict:
    """One end-to-end run of the three scripts; returns timings (called in a fresh process)."""
    from _common import peak_rss_mib

    import torch  # noqa: F401 - imported before the clock starts: start-up is not counted

    root = C.bench_dir() / f"scripts-{n_images}"
    make_input(n_images, root)
    out = root / "out"
    sink = io.StringIO()
    res: dict = {"images": n_images, "load_before": C.load(), "writer": "PIL" if _cv2 is None else "cv2"}
    with contextlib.redirect_stdout(sink):
        t0 = time.perf_counter()
        res["transfer"] = add_noise(root / "images", root / "noise", out)
        t1 = time.perf_counter()
        res["rss_after_transfer_mib"] = peak_rss_mib()
        res["negatives"] = rot_all(out / "mix" / "0.1", root / "coordinates.txt", out / "0.1_32_images", "RGB")
        t2 = time.perf_counter()
        n_masks = rot_all(root / "masks", root / "coordinates.txt", out / "32_masks", "L")
        t3 = time.perf_counter()
    assert n_masks == res["negatives"]
    res.update(t_transfer=t1 - t0, t_rot_images=t2 - t1, t_rot_masks=t3 - t2, t_total=t3 - t0,
               files=len(os.listdir(out / "0.1_32_images")), peak_rss_mib=peak_rss_mib(), load_after=C.load())
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return res


def matching_loop_seconds(n_images: int) -> float:
    """Wall time of the scripts' line-to-image matching loop alone (no image work) on n images.

    It is pure Python list scanning, so it is timed in this process; repeated copies of an image
    have identical coordinate lines, which `file.index` finds early: a set of n distinct images
    would take longer (this is the scripts' best case).
    """
    root = C.bench_dir() / f"scripts-loop-{n_images}"
    make_input(n_images, root)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            t = time.perf_counter()
            rot_all(root / "images", root / "coordinates.txt", root / "out", "RGB", rot=lambda *a: None)
            return time.perf_counter() - t
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(n_images: int, keep: bool = False, deps: Path | None = None) -> dict:
    """run_once in a subprocess (its own peak RSS); the result as a dict. deps: a folder put on its
    PYTHONPATH (with opencv there, cv2.imwrite is the real one)."""
    cmd = [sys.executable, __file__, "--one", str(n_images)] + (["--keep"] if keep else [])
    env = dict(os.environ)
    if deps:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(deps), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent, env=env)
    if proc.returncode:
        sys.exit(f"original scripts run failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


TORCHVISION_STANDIN = {
    "__init__.py": "from . import transforms, utils  # noqa: F401  (benchmarks/original_scripts.py stand-in)\n",
    "transforms.py": '''"""torchvision.transforms as the original scripts use it (stand-in, timing only)."""
import torch.nn.functional as F


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Resize:
    def __init__(self, size, interpolation=None, max_size=None, antialias=True):
        self.size = [size, size] if isinstance(size, int) else list(size)
        self.antialias = antialias

    def __call__(self, img):
        if list(img.shape[-2:]) == self.size:  # torchvision returns such an image as it is
            return img
        x = img[None] if img.ndim == 3 else img
        out = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=bool(self.antialias))
        return out[0] if img.ndim == 3 else out
''',
    "utils.py": "def make_grid(*args, **kwargs):\n    raise NotImplementedError('stand-in: only for batches')\n",
}
REAL_SCRIPTS = ("add_noise.py", "rot_patch.py", "rot_mask.py", "misc.py")


def run_real(n_images: int, scripts: Path, deps: Path | None = None, keep: bool = False) -> dict:
    """The original scripts on the same n train images; wall time of each `python SCRIPT` (imports
    included), the imports alone, outputs counted. See the module docstring."""
    missing = [name for name in REAL_SCRIPTS if not (Path(scripts) / name).is_file()]
    if missing:
        sys.exit(f"--real {scripts}: no {', '.join(missing)} there (the original codes/Mix_Rot folder)")
    root = C.bench_dir() / f"scripts-real-{n_images}"
    shutil.rmtree(root, ignore_errors=True)
    make_input(n_images, root / "in")
    work = root / "work"
    for sub in ("images", "masks", "noise"):
        (work / "Demos" / sub).mkdir(parents=True)
        for f in (root / "in" / sub).iterdir():
            os.link(f, work / "Demos" / sub / f.name)
    shutil.copy(root / "in" / "coordinates.txt", work / "coordinates.txt")
    for name in REAL_SCRIPTS:
        text = (Path(scripts) / name).read_text()
        if name == "add_noise.py":
            import re

            text, n = re.subn(r"^M = \[[^\]]*\]", "M = [0.1]", text, flags=re.M)
            if n != 1:
                sys.exit(f"--real: {name} has no `M = [...]` line to set to the recipe's m = 0.1")
        (work / name).write_text(text)
    path = [str(deps)] if deps else []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    probe = [sys.executable, "-c", "import torchvision.transforms, torchvision.utils"]
    if subprocess.run(probe, env={**env, "PYTHONPATH": os.pathsep.join(path)}, capture_output=True).returncode:
        standin = root / "standin" / "torchvision"
        standin.mkdir(parents=True)
        for name, text in TORCHVISION_STANDIN.items():
            (standin / name).write_text(text)
        path.insert(0, str(standin.parent))
    env["PYTHONPATH"] = os.pathsep.join(path)
    # what each script imports before its work: add_noise the torch stack, the rot scripts PIL
    need = "import torch, torchvision.transforms, torchvision.utils, cv2, einops.layers.torch, PIL.Image, numpy"
    need_rot = "import PIL.Image"
    check = subprocess.run([sys.executable, "-c", need], env=env, capture_output=True, text=True)
    if check.returncode:
        sys.exit(f"--real: the scripts' imports fail ({check.stderr.strip().splitlines()[-1]}); put opencv and einops "
                 "in --real-deps DIR (pip install --target DIR --no-deps opencv-python-headless einops)")
    res: dict = {"images": n_images, "load_before": C.load(), "standin_torchvision": str(root / "standin") in path}
    for key, code in (("t_imports", need), ("t_imports_rot", need_rot)):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        res[key] = time.perf_counter() - t
    for key, script in (("t_transfer", "add_noise.py"), ("t_rot_images", "rot_patch.py"), ("t_rot_masks", "rot_mask.py")):
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, script], cwd=work, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        res[key] = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit(f"--real: {script} failed:\n{proc.stderr.read().decode()[-2000:]}")
        res[f"peak_rss_mib_{script[:-3]}"] = usage.ru_maxrss / 1024
    out = work / "Demos"
    res.update(transfer=len(os.listdir(out / "mix" / "0.1")), negatives=len(os.listdir(out / "output" / "0.1_32_images")),
               masks=len(os.listdir(out / "output" / "32_masks")), load_after=C.load())
    res["t_total"] = res["t_transfer"] + res["t_rot_images"] + res["t_rot_masks"]
    res["t_start"] = res["t_imports"] + 2 * res["t_imports_rot"]  # interpreter start and imports of the three
    res["peak_rss_mib"] = max(v for k, v in res.items() if k.startswith("peak_rss_mib_"))
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return res


def print_real(results: list[dict]) -> None:
    rows = [[r["images"], r["transfer"], r["negatives"], r["t_imports"], r["t_transfer"], r["t_rot_images"],
             r["t_rot_masks"], r["t_total"], r["t_total"] - r["t_start"], r["peak_rss_mib"],
             "stand-in" if r["standin_torchvision"] else "real", r["load_after"]] for r in results]
    C.table(["images", "transfer out", "negative files", "add_noise's imports s", "add_noise.py s", "rot_patch.py s",
             "rot_mask.py s", "total s", "total less start-ups", "peak RSS MiB", "torchvision", "load"], rows)


def print_results(results: list[dict]) -> None:
    rows = []
    for r in results:
        samples = r["transfer"] + r["negatives"]
        rows.append([r["images"], r["transfer"], r["negatives"], r["t_transfer"], r["t_rot_images"], r["t_rot_masks"],
                     r["t_total"], samples / r["t_total"], r["negatives"] / (r["t_rot_images"] + r["t_rot_masks"]),
                     r["peak_rss_mib"], r["load_after"]])
    C.table(["images", "transfer out", "negatives out", "add_noise s", "rot_patch s", "rot_mask s", "total s",
             "samples/s", "negatives/s (rot)", "peak RSS MiB", "load"], rows)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth = (b["t_total"] / a["t_total"]) / (b["images"] / a["images"])
        print(f"   {b['images'] / a['images']:.1f}x the images took {b['t_total'] / a['t_total']:.2f}x the time: "
              f"{growth:.2f}x the time per image")
    print("   note: repeated copies of an image have identical coordinate lines, so the scripts' "
          "`file.index(line)` pairs them all with the first copy (same work, fewer distinct files: "
          + ", ".join(f"{r['files']} files for {r['negatives']} negatives" for r in results) + ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[427, 854])
    ap.add_argument("--keep", action="store_true", help="keep the outputs under the bench dir")
    ap.add_argument("--real", type=Path, help="folder of the original add_noise.py, rot_patch.py, rot_mask.py, misc.py: "
                                              "run them too on the same input")
    ap.add_argument("--real-deps", type=Path, help="folder put on the original scripts' PYTHONPATH (opencv, einops)")
    ap.add_argument("--cv2-from", type=Path, help="folder with opencv put on the re-implementation's PYTHONPATH "
                                                  "(its add_noise then writes with cv2.imwrite, as the script does)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_once(args.one, args.keep)))
        return
    C.header("original SIRST-5K scripts (add_noise + rot_patch + rot_mask), m = 0.1, 32-px mirrored negatives")
    results, real = [], []
    for n in args.images:
        C.progress(f"original scripts (re-implemented) on {n} images")
        results.append(run(n, args.keep, args.cv2_from))
        if args.real:
            C.progress(f"original scripts (real) on {n} images")
            real.append(run_real(n, args.real, args.real_deps, args.keep))
    print_results(results)
    if real:
        print_real(real)
        for a, b in zip(results, real):
            print(f"   {a['images']} images: re-implementation ({a.get('writer', 'PIL')} PNG writer for cv2.imwrite) "
                  f"{a['t_total']:.1f} s (imports not timed); originals {b['t_total']:.1f} s with their start-ups, "
                  f"{b['t_total'] - b['t_start']:.1f} s without: the re-implementation takes "
                  f"{a['t_total'] / (b['t_total'] - b['t_start']):.2f}x their time (add_noise "
                  f"{a['t_transfer'] / (b['t_transfer'] - b['t_imports']):.2f}x, rot_patch "
                  f"{a['t_rot_images'] / (b['t_rot_images'] - b['t_imports_rot']):.2f}x, rot_mask "
                  f"{a['t_rot_masks'] / (b['t_rot_masks'] - b['t_imports_rot']):.2f}x)")


if __name__ == "__main__":
    main()
