"""Typed params of every step: each default, choice, help text and check written once.

One frozen dataclass per step. The command line takes its option defaults, choices (`Literal`
types, which typer turns into choices) and help texts from here; the library builds the same
objects; and `version_dict()` decides, by an explicit per-field rule, what enters a step's
version and task keys:

  - `always`: the field identifies the output;
  - `if_changed`: the field enters only when it differs from its default. This is the rule for
    options added after outputs were published: a run that does not use the option keeps the
    version (and the bytes) it always had, and one that does gets a new one.

Only the standard library is imported here, so `sirst5k --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Sequence, get_args

VersionRule = Literal["always", "if_changed"]

# The choices, each written once.
Layout = Literal["auto", "dnanet", "basicirstd", "sirst", "sirst-v2", "folder"]
TransferMode = Literal["blend", "additive"]
NoiseField = Literal["resize", "mosaic", "model"]
NoiseScale = Literal["source", "bank"]
NoiseLevel = Literal["flat", "image"]
ModelFit = Literal["temporal", "flat"]
Clamp = Literal["script", "clip"]
Device = Literal["auto", "cpu", "cuda"]
ROTATIONS = (0, 1, 2, 3)


def choices(literal: Any) -> tuple[str, ...]:
    """The values of a `Literal` type, in order."""
    return tuple(get_args(literal))


class ParamError(ValueError):
    """A bad option value: `str(err)` is the one line the user sees (`--mix 2: values in [0, 1]`)."""

    def __init__(self, option: str, value: Any, problem: str):
        self.option, self.value, self.problem = option, value, problem
        flag = option.replace("_", "-")
        if isinstance(value, bool):  # a switch: shown as the user typed it (--keep-aspect, not "--keep-aspect True")
            where = f"--{flag}" if value else f"--no-{flag}"
        else:
            shown = ",".join(map(_plain, value)) if isinstance(value, (list, tuple)) else _plain(value)
            where = f"--{flag} {shown}"
        super().__init__(f"{where}: {problem}")


def _plain(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def param(default: Any, help: str, version: VersionRule = "always") -> Any:
    """A field with its default, its help text and its version rule."""
    return dataclasses.field(default=default, metadata={"help": help, "version": version})


class StepParams:
    """Shared behaviour of the step params dataclasses."""

    STEP: ClassVar[str] = ""

    @classmethod
    def help(cls, name: str) -> str:
        return _field(cls, name).metadata["help"]

    @classmethod
    def default(cls, name: str) -> Any:
        return _field(cls, name).default

    def version_dict(self) -> dict[str, Any]:
        """The fields that identify this step's output, as JSON values (tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("version", "always") == "if_changed" and value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _field(cls: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


# -- parsing and checks shared by the steps ------------------------------------------------------

def split_values(values: str | Sequence[Any]) -> list[str]:
    """Repeated options and comma-separated values alike: ["3,32", "9"] -> ["3", "32", "9"]."""
    if isinstance(values, (str, int, float)):
        values = [values]
    return [part.strip() for v in values for part in str(v).split(",") if part.strip()]


def parse_floats(option: str, values: str | Sequence[Any]) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in split_values(values))
    except ValueError:
        raise ParamError(option, values, "numbers, repeated or comma-separated") from None


def parse_ints(option: str, values: str | Sequence[Any]) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in split_values(values))
    except ValueError:
        raise ParamError(option, values, "whole numbers, repeated or comma-separated") from None


def _distinct(option: str, values: tuple) -> None:
    if not values:
        raise ParamError(option, values, "give at least one value")
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ParamError(option, values, f"{_plain(seen[0])} is given twice")


def _choice(option: str, value: Any, literal: Any) -> None:
    allowed = choices(literal)
    if value not in allowed:
        raise ParamError(option, value, f"use {', '.join(allowed[:-1])} or {allowed[-1]}")


def _at_least(option: str, value: float, low: float) -> None:
    if value < low:
        raise ParamError(option, value, f"must be at least {_plain(low)}")


# -- the steps -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthParams(StepParams):
    """The built-in synthetic infrared source (`sirst5k synth`)."""

    STEP: ClassVar[str] = "synth"
    images: int = param(1327, "Labelled images.")
    sequences: int = param(4, "Frame sequences for the noise bank.")
    frames: int = param(8, "Frames per sequence.")
    size: int = param(256, "Image and frame side in pixels.")
    seed: int = param(0, "Global seed; every draw is keyed by (seed, stage, sample).")

    def __post_init__(self) -> None:
        _at_least("images", self.images, 2)
        _at_least("sequences", self.sequences, 1)
        _at_least("frames", self.frames, 2)
        _at_least("size", self.size, 32)


@dataclass(frozen=True)
class IngestParams(StepParams):
    """A labelled dataset on disk -> shards at one image size, or each image at its own."""

    STEP: ClassVar[str] = "ingest"
    NATIVE: ClassVar[str] = "native"
    layout: Layout = param("auto", "Dataset layout; auto detects it.")
    size: int | str = param(256, "Side of the square shard images (bilinear; masks nearest), or native: every "
                                 "image at its own size and pixels (shards of one size each; schema 2 when the "
                                 "sizes differ).")
    # 128: at SIRST's size (341 train images) three tasks instead of two keep two lanes busy to
    # the end (the recipe 0.4-0.6 s faster than with 256, measured); 64 was no faster
    shard_size: int = param(128, "Samples per shard (one dask task each).")
    split_ratio: float = param(0.5, "Train fraction for the folder layout.")
    skip_bad: bool = param(False, "Warn about bad files and leave them out.")
    seed: int = param(0, "Global seed; every draw is keyed by (seed, stage, sample).")
    keep_aspect: bool = param(False, "With a numeric --size: resize the long side to it (bilinear; masks nearest) "
                                     "and pad the rest with 0 at the bottom/right to size x size; the valid box "
                                     "is kept in meta valid_h/valid_w.", version="if_changed")

    def __post_init__(self) -> None:
        _choice("layout", self.layout, Layout)
        object.__setattr__(self, "size", self.parse_size(self.size))
        if self.size != self.NATIVE:
            _at_least("size", self.size, 16)
        elif self.keep_aspect:
            raise ParamError("keep_aspect", True, "needs a numeric --size (native keeps every image as it is)")
        _at_least("shard_size", self.shard_size, 1)
        if not 0.0 <= self.split_ratio <= 1.0:
            raise ParamError("split_ratio", self.split_ratio, "a fraction in [0, 1]")

    @classmethod
    def parse_size(cls, value: Any) -> int | str:
        """`--size` as given: a whole number of pixels (int or text) or "native"."""
        if isinstance(value, bool):
            raise ParamError("size", value, "a whole number of pixels or native")
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == cls.NATIVE:
            return cls.NATIVE
        try:
            return int(text)
        except ValueError:
            raise ParamError("size", value, "a whole number of pixels or native") from None

    @property
    def native(self) -> bool:
        return self.size == self.NATIVE


@dataclass(frozen=True)
class NoiseBankParams(StepParams):
    """Flat, temporally stable windows of real frame sequences (the paper's rule, plus options)."""

    STEP: ClassVar[str] = "noise-bank"
    window: int = param(32, "Window side in pixels.")
    stride: int | None = param(None, "Grid step (default: the window).")
    max_var: float = param(50.0, "Keep windows whose variance is below this in every frame.")
    min_mean: float = param(0.0, "... and whose mean is above this in every frame.")
    max_seq_var: float = param(50.0, "Most variance of the window variances across frames.")
    max_seq_mean: float = param(50.0, "Most variance of the window means across frames.")
    temporal: int = param(0, "Frames per sliding temporal window; 0 = whole sequence (the paper).")
    max_peak: float = param(0.0, "Reject a window whose brightest pixel rises this many grey levels above its "
                                 "mean in any frame (small targets, hot pixels); 0 = no limit, as in the paper.",
                            version="if_changed")
    skip_bad: bool = param(False, "Warn about unreadable frames and leave them out.", version="if_changed")
    max_dip: float = param(0.0, "Reject a window whose darkest pixel falls this many grey levels below its mean in "
                                "any frame (dead pixels, dark spots); 0 = no limit, as in the paper. With "
                                "--max-peak 20, 20 is the clean bank we suggest for real frames.",
                           version="if_changed")
    scene_corr: float = param(0.9, "Split each sequence into runs of one scene: consecutive frames whose 32x32 "
                                   "thumbnails correlate below this (or differ in size) start a new run, so no "
                                   "temporal window spans a scene cut; 0 = off (before: the only way).",
                              version="if_changed")
    model: bool = param(False, "Also fit each sequence's sensor-noise model (temporal and fixed-pattern noise, "
                               "row/column stripes, 2-D noise spectrum, hot/dead pixels) into the bank, for "
                               "transfer --field model.", version="if_changed")
    model_nlf: bool = param(False, "With --model and the temporal fit: also fit the noise-level function (temporal "
                                   "noise std against grey level; model format 3), for transfer --noise-level "
                                   "image; off: format 2, as before.", version="if_changed")
    spot_sigmas: float = param(8.0, "Reject a window where a pixel stands out from its 5x5 median by this many times "
                                    "the window's robust noise level (and --spot-floor), above or below: hot and "
                                    "dead pixels, targets up to 3x3 px; 0 = off (before: the only way).",
                               version="if_changed")
    spot_floor: float = param(10.0, "... and by at least this many grey levels.", version="if_changed")
    model_fit: ModelFit = param("temporal", "How --model fits: temporal (noise by construction: differences of "
                                            "consecutive frames in stable 256-px tiles, fixed stripes from whole "
                                            "sensor rows/columns; model format 2) or flat (each kept window's own "
                                            "pixels, texture included; format 1, before).", version="if_changed")
    model_tile: int = param(0, "Tile side of the temporal fit (native pixels, a multiple of --window; halved "
                               "where a sequence has too few stable tiles); 0 = the largest multiple of "
                               "--window up to 256.", version="if_changed")
    allow_overlap: bool = param(False, "Build the bank even when a frame is (or nearly is) an image of the test "
                                       "split; otherwise that is an error naming both files.", version="if_changed")

    def __post_init__(self) -> None:
        _at_least("window", self.window, 2)
        if self.stride is None:
            object.__setattr__(self, "stride", self.window)
        _at_least("stride", self.stride, 1)
        _at_least("temporal", self.temporal, 0)
        _at_least("max_peak", self.max_peak, 0)
        _at_least("max_dip", self.max_dip, 0)
        _at_least("spot_sigmas", self.spot_sigmas, 0)
        _at_least("spot_floor", self.spot_floor, 0)
        _choice("model_fit", self.model_fit, ModelFit)
        if self.model_nlf and not (self.model and self.model_fit == "temporal"):
            raise ParamError("model_nlf", True, "needs --model with --model-fit temporal (the function is fitted "
                                                "from its pairs)")
        if self.model and self.model_fit == "temporal" and self.stride != self.window:
            raise ParamError("stride", self.stride, "the temporal model fit tiles whole windows: use --stride "
                                                    "= --window, or --model-fit flat")
        # checked only where it is used: a bank without --model (or fitted flat) has no tiles
        if self.model_tile and self.model and self.model_fit == "temporal" and (
                self.model_tile < self.window or self.model_tile % self.window):
            raise ParamError("model_tile", self.model_tile, f"a multiple of the window ({self.window}), or 0")
        _at_least("model_tile", self.model_tile, 0)
        if not 0.0 <= self.scene_corr <= 1.0:
            raise ParamError("scene_corr", self.scene_corr, "a correlation in [0, 1]; 0 = off")
        # typer hands floats; the bank's attributes (and so its version) store them as floats
        for name in ("max_var", "min_mean", "max_seq_var", "max_seq_mean", "max_peak", "max_dip", "scene_corr",
                     "spot_sigmas", "spot_floor"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # The clean-bank defaults (scene split, spot rule) enter the version only where they changed
    # what the bank holds (the stage adds them then: `applied_version`), so a bank they leave as it
    # was (the synthetic `make repro` one: no cut, no spot by construction) keeps its version and
    # bytes, and a real bank they cleaned names them.
    CLEAN_FIELDS: ClassVar[tuple[str, ...]] = ("scene_corr", "spot_sigmas", "spot_floor")

    def version_dict(self) -> dict[str, Any]:
        """As every step's, but the clean-bank fields are left to `applied_version`, and the model's
        fit (and its noise-level function) enters only with `--model` and the temporal fit (the
        flat fit keeps the old version)."""
        out = super().version_dict()
        for name in (*self.CLEAN_FIELDS, "model_fit", "model_tile", "model_nlf"):
            out.pop(name, None)
        if self.model and self.model_fit != "flat":
            out.update(model_fit=self.model_fit, model_tile=self.tile)
            if self.model_nlf:  # format 3: new bytes, a new version; off keeps format 2's version
                out["model_nlf"] = True
        return out

    @property
    def tile(self) -> int:
        """The temporal fit's tile side: `model_tile`, or for 0 the largest multiple of the window
        up to 256 (256 for the default 32-px window)."""
        return self.model_tile or max(256 // self.window, 1) * self.window

    def applied_version(self, split: bool, spotted: bool) -> dict[str, Any]:
        """`version_dict` plus the scene split when it cut a sequence, the spot rule when it rejected
        a window: the bank's version and attributes."""
        out = self.version_dict()
        if split:
            out["scene_corr"] = self.scene_corr
        if spotted:
            out.update(spot_sigmas=self.spot_sigmas, spot_floor=self.spot_floor)
        return out


@dataclass(frozen=True)
class TransferParams(StepParams):
    """Fuse noise-bank patches (or noise-model fields) into labelled images."""

    STEP: ClassVar[str] = "transfer"
    mix: tuple[float, ...] = param((0.1,), "Noise weight m in [0, 1]; several (repeated or comma-separated) "
                                          "give each image once per m.")
    mode: TransferMode = param("blend", "blend: m*noise + (1-m)*image (paper); additive: image + "
                                        "m*(noise - mean(noise)), keeps brightness and contrast.")
    field: NoiseField = param("resize", "resize: one patch resized to the image (paper; smooth blobs, no pixel "
                                        "noise); mosaic: bank patches tiled at native pitch; model: fields drawn "
                                        "from the bank's fitted noise model (noise-bank --model).")
    split: str = param("train", "Which split to transfer.")
    seed: int = param(0, "Global seed; every draw is keyed by (seed, stage, sample).")
    noise_scale: NoiseScale = param("source", "mosaic and model fields: source builds the field at the sample's "
                                              "original size at the bank's pixel pitch and resizes it as ingest "
                                              "resized the image (the sensor's noise at the image's scale); bank "
                                              "lays it at native pitch on the shard image (before: the only way). "
                                              "resize ignores it.", version="if_changed")
    noise_level: NoiseLevel = param("flat", "model field: flat adds the model's one noise level everywhere "
                                            "(before: the only way); image scales its 2-D noise per pixel by the "
                                            "sensor's noise-level function at the image's local grey level (a bank "
                                            "from noise-bank --model --model-nlf).", version="if_changed")

    def __post_init__(self) -> None:
        object.__setattr__(self, "mix", tuple(float(m) for m in self.mix))
        _distinct("mix", self.mix)
        if any(not 0.0 <= m <= 1.0 for m in self.mix):
            raise ParamError("mix", self.mix, "values in [0, 1]")
        _choice("mode", self.mode, TransferMode)
        _choice("field", self.field, NoiseField)
        _choice("noise_scale", self.noise_scale, NoiseScale)
        _choice("noise_level", self.noise_level, NoiseLevel)
        if self.noise_level != "flat" and self.field != "model":
            raise ParamError("noise_level", self.noise_level, "applies to --field model only")

    def version_dict(self) -> dict[str, Any]:
        """As every step's, but `noise_scale` enters exactly when it changes the bytes from what a
        version without it meant: never for `resize` (a stretched patch has no scale), and for
        `mosaic` (and `model`) when it is not `bank`, the scale every earlier mosaic was made at.
        So the default `source` gives mosaic runs a new version (new bytes), `--noise-scale bank`
        keeps the old version and bytes, and resize runs keep theirs either way."""
        out = super().version_dict()
        out.pop("noise_scale", None)
        if self.field != "resize" and self.noise_scale != "bank":
            out["noise_scale"] = self.noise_scale
        return out

    @property
    def effective_noise_scale(self) -> str:
        """The scale the field is built at: `noise_scale`, or "bank" for resize (no scale)."""
        return "bank" if self.field == "resize" else self.noise_scale


@dataclass(frozen=True)
class NegativesParams(StepParams):
    """Mirrored and rotated boxes around every target, in image and mask alike."""

    STEP: ClassVar[str] = "negatives"
    patch: tuple[int, ...] = param((32,), "Box side N (an N-pixel box); several, repeated or comma-separated.")
    mirror: bool = param(True, "Mirror the box left-right before rotating (the 32-px script does).")
    rotations: tuple[int, ...] = param(ROTATIONS, "k values, rotation by k x 90 degrees counter-clockwise.")
    clamp: Clamp = param("script", "Box placement near borders: script (the original rule) or clip "
                                   "(the minimal shift inside the image).")
    keep_cut: bool = param(True, "Keep negatives whose box cuts a target in two.")
    split: str = param("train", "Which split to make negatives from.")
    shard_size: int = param(1024, "Most samples per output shard.")

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        object.__setattr__(self, "rotations", tuple(int(k) for k in self.rotations))
        _distinct("patch", self.patch)
        if any(p < 2 for p in self.patch):
            raise ParamError("patch", self.patch, "sizes of at least 2 pixels")
        _distinct("rotations", self.rotations)
        if any(k not in ROTATIONS for k in self.rotations):
            raise ParamError("rotations", self.rotations, "values from 0,1,2,3")
        _choice("clamp", self.clamp, Clamp)
        _at_least("shard_size", self.shard_size, 1)

    def check_fits(self, height: int, width: int, where: str) -> None:
        """Every box must fit the images: caught before any work, naming the input."""
        too_big = [p for p in self.patch if p > min(height, width)]
        if too_big:
            raise ParamError("patch", self.patch, f"a {too_big[0]}-pixel box does not fit the {height}x{width} "
                                                  f"images of {where}")


@dataclass(frozen=True)
class PublishParams(StepParams):
    """The final dataset: train = originals (+ transfers) + negatives, test = originals."""

    STEP: ClassVar[str] = "publish"
    name: str = param("sirst5k", "Dataset name.")
    shard_size: int = param(1024, "Samples per final shard.")
    transfer: bool = param(False, "The noise-transferred images are published too.")

    def __post_init__(self) -> None:
        _at_least("shard_size", self.shard_size, 1)
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise ParamError("name", self.name, "a plain name (no slashes, not hidden)")


STEPS: tuple[type[StepParams], ...] = (SynthParams, IngestParams, NoiseBankParams, TransferParams, NegativesParams,
                                       PublishParams)
