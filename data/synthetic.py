"""The embedded synthetic two-domain benchmark: a small stand-in for SYNTHIA → Cityscapes.

``generate(out, seed=0)`` writes

- ``OUT/source``: the SYNTHIA-RAND-CITYSCAPES layout — ``RGB/NNNNNNN.png``, ``GT/LABELS/NNNNNNN.png`` as 16-bit
  3-channel PNGs with the SYNTHIA class id in channel 0 (instance id in channel 1), ``lists/{train,val}.txt``;
- ``OUT/target``: the Cityscapes layout — ``leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png``
  and ``gtFine/.../*_gtFine_labelIds.png`` with real labelIds, using real train-city names of both between-city
  groups (so ``group0_*``/``group1_*`` work) and the real val cities;
- ``OUT/manifest.json``: parameters, generator version, counts per split, sizes, class histograms.

Both domains share the street-layout sampler of :mod:`data.scenes` (with small geometric shifts: horizon,
object scale, an ego-vehicle hood in the target) but differ strongly in appearance, the regime output-space
adversarial adaptation (AdaptSegNet, https://arxiv.org/abs/1802.10349) was designed for:

- source: flat, saturated "rendered" colours, sharp edges, no noise;
- target: another palette (several classes shift or partly swap hue: e.g. source roads are purple and
  sidewalks pink, target ones grey; traffic lights are yellow boxes in the source and dark in the target),
  per-class textures (leaves, asphalt, facades), lighting gradients, contrast changes, sensor noise, blur,
  and a mild per-city colour cast that differs between the two city groups.

The strength of the target's appearance shift is configurable (``shift``, a name of :data:`SHIFTS`): how far the
target palette moves from the source's, and the scale of texture, sensor noise and blur. ``"default"`` is the
original benchmark, byte for byte; ``"mild"``, ``"strong"`` and ``"hard"`` give other domain gaps, so that a finding
does not rest on one benchmark. ``"strong"`` (texture, noise, blur) turned out no harder for a source-only model
than the default; ``"hard"`` moves the target palette half as far again from the source's, and a source-only model's
target mIoU16 drops (11.7 → 8.3 for the same checkpoint, docs/results.md).

Output is bit-identical for a given seed and parameters (each image has its own seeded generator).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from . import labels as L
from .io import write_image, write_png
from .layouts import CITYSCAPES_CITY_GROUPS, CITYSCAPES_VAL_CITIES
from .scenes import EGO, LANE, ROLES, Canvas, SceneStyle, draw_street

__all__ = ["generate", "SyntheticParams", "Shift", "SHIFTS", "GenerateResult", "GENERATOR_VERSION", "SOURCE_STYLE", "TARGET_STYLE",
           "render_scene", "TARGET_TRAIN_CITIES"]

GENERATOR_VERSION = 1
TARGET_TRAIN_CITIES = CITYSCAPES_CITY_GROUPS["group0"][:3] + CITYSCAPES_CITY_GROUPS["group1"][:3]

SOURCE_STYLE = SceneStyle(horizon=(0.36, 0.5), object_scale=1.0, ego_hood=False, terrain=False, lane_role="lane")
TARGET_STYLE = SceneStyle(horizon=(0.32, 0.44), object_scale=1.12, ego_hood=True, terrain=True, lane_role="road")

# role → colour options (an object picks one); source: saturated and flat.
SOURCE_PALETTE = {
    "void": [(0, 0, 0)], "sky": [(70, 160, 255)], "building": [(235, 140, 60), (205, 90, 95), (240, 210, 90), (150, 110, 210)],
    "window": [(40, 60, 170)], "road": [(125, 80, 145)], "lane": [(255, 255, 255)], "sidewalk": [(245, 150, 215)],
    "curb": [(255, 190, 235)], "vegetation": [(40, 205, 40)], "trunk": [(150, 95, 30)], "terrain": [(160, 240, 90)],
    "wall": [(170, 170, 255)], "fence": [(225, 190, 140)], "fence_bar": [(170, 120, 60)], "pole": [(185, 185, 185)],
    "light_box": [(255, 175, 0)], "lamp": [(255, 40, 40), (40, 255, 40)], "sign": [(200, 255, 0)],
    "car": [(225, 30, 30), (30, 60, 235), (240, 240, 240), (250, 200, 0)], "car_window": [(120, 225, 255)],
    "wheel": [(25, 25, 25)], "bus": [(255, 120, 0)], "bus_window": [(120, 225, 255)],
    "person": [(255, 60, 130), (0, 185, 165)], "skin": [(255, 200, 160)], "rider": [(255, 0, 255)],
    "bicycle": [(0, 255, 255)], "motorcycle": [(255, 255, 120)], "ego": [(20, 20, 20)],
}
# target: desaturated, "photographic", several hue shifts relative to the source.
TARGET_PALETTE = {
    "void": [(0, 0, 0)], "sky": [(195, 205, 215), (165, 188, 215), (215, 210, 200)],
    "building": [(120, 115, 105), (150, 140, 125), (95, 95, 100), (170, 150, 130), (130, 90, 75)],
    "window": [(50, 55, 62), (150, 165, 180)], "road": [(88, 86, 90)], "lane": [(205, 205, 200)],
    "sidewalk": [(150, 145, 138)], "curb": [(175, 172, 165)], "vegetation": [(72, 98, 38), (52, 82, 45)],
    "trunk": [(80, 62, 45)], "terrain": [(125, 135, 65)], "wall": [(150, 135, 118)], "fence": [(110, 100, 90)],
    "fence_bar": [(70, 65, 60)], "pole": [(92, 92, 98)], "light_box": [(40, 42, 40)],
    "lamp": [(250, 90, 40), (100, 250, 130)], "sign": [(230, 230, 230), (35, 80, 200), (200, 40, 40)],
    "car": [(30, 30, 36), (200, 200, 206), (92, 96, 112), (150, 22, 22), (42, 52, 122)],
    "car_window": [(42, 48, 58)], "wheel": [(16, 16, 16)], "bus": [(230, 220, 62), (40, 110, 200)],
    "bus_window": [(42, 48, 58)], "person": [(42, 42, 52), (62, 72, 112), (122, 102, 82)], "skin": [(200, 160, 130)],
    "rider": [(62, 62, 72), (180, 32, 32)], "bicycle": [(32, 32, 32), (160, 160, 160)],
    "motorcycle": [(22, 22, 22), (150, 22, 22)], "ego": [(32, 32, 36)],
}
# target only: fine-grained noise amplitude and coarse blotch amplitude per role (texture).
TARGET_TEXTURE = {
    "building": (10, 14), "road": (9, 6), "sidewalk": (8, 6), "vegetation": (24, 20), "terrain": (14, 12),
    "wall": (8, 10), "sky": (2, 10), "trunk": (8, 4), "car": (4, 3), "person": (6, 4), "window": (6, 6),
}


@dataclass(frozen=True)
class Shift:
    """Strength of the target's appearance shift. ``palette``: 1 = the target palette, 0 = each colour moved to the
    mean source colour of its role (the hue gap closes); ``texture``, ``noise``, ``blur``: factors on the per-class
    texture amplitudes, the sensor-noise level and the blur radius."""

    palette: float = 1.0
    texture: float = 1.0
    noise: float = 1.0
    blur: float = 1.0


SHIFTS = {
    "default": Shift(),
    "mild": Shift(palette=0.5, texture=0.5, noise=0.5, blur=0.5),
    "strong": Shift(palette=1.0, texture=2.5, noise=2.5, blur=1.5),
    "hard": Shift(palette=1.5),  # colours extrapolated away from the source's (clipped to 0..255 at the end)
}


@dataclass(frozen=True)
class SyntheticParams:
    seed: int = 0
    num_source: int = 400
    num_source_val: int = 40
    num_target_train: int = 300
    num_target_val: int = 100
    source_size: tuple[int, int] = (192, 112)  # (W, H), about SYNTHIA's 1280x760 aspect
    target_size: tuple[int, int] = (192, 96)  # (W, H), Cityscapes' 2:1
    shift: str = "default"  # a name of SHIFTS

    def __post_init__(self):
        if self.shift not in SHIFTS:
            raise ValueError(f"shift = {self.shift!r}; expected one of {', '.join(SHIFTS)}")
        for name in ("num_source", "num_target_train", "num_target_val"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)!r}; expected a positive integer")
        if self.num_source_val < 0:
            raise ValueError(f"num_source_val = {self.num_source_val!r}; expected an integer >= 0")
        for name in ("source_size", "target_size"):
            size = tuple(getattr(self, name))
            if len(size) != 2 or not all(isinstance(v, int) and 16 <= v <= 4096 for v in size):
                raise ValueError(f"{name} = {getattr(self, name)!r}; expected (width, height) in 16..4096 pixels")
            object.__setattr__(self, name, size)

    def to_json(self) -> dict:
        out = asdict(self)
        out["source_size"], out["target_size"] = list(self.source_size), list(self.target_size)
        if self.shift == "default":  # manifests written before shifts existed stay identical (and still match)
            del out["shift"]
        return out


@dataclass(frozen=True)
class GenerateResult:
    out: Path
    created: bool  # False: an identical benchmark was already there (nothing written)
    seconds: float
    bytes_on_disk: int
    manifest: dict


# ---------------------------------------------------------------------------------------------------------
# rendering


def _paint_colors(canvas: Canvas, palette: dict, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """One colour per paint: all paints of an object share the option choice and the jitter of each role."""
    choices: dict[tuple[int, int], np.ndarray] = {}
    colors = np.zeros((len(canvas.paints), 3), dtype=np.float32)
    for paint, (role, obj) in enumerate(canvas.paints):
        key = (role, obj) if obj else (role, -paint)
        if key not in choices:
            options = palette[ROLES[role].name]
            base = np.asarray(options[int(rng.integers(len(options)))], dtype=np.float32)
            choices[key] = base + rng.normal(0.0, jitter, 3).astype(np.float32)
        colors[paint] = choices[key]
    return colors


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    coarse = rng.normal(0.0, 1.0, (height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.float32)


def _source_means() -> dict[str, np.ndarray]:
    return {role: np.mean(np.asarray(options, dtype=np.float32), axis=0) for role, options in SOURCE_PALETTE.items()}


def _render(paint: np.ndarray, canvas: Canvas, rng: np.random.Generator, domain: str, cast: np.ndarray,
            shift: Shift = SHIFTS["default"]) -> np.ndarray:
    h, w = paint.shape
    if domain == "source":  # flat colours, sharp edges: only a small global brightness change
        colors = _paint_colors(canvas, SOURCE_PALETTE, rng, jitter=6.0)
        image = colors[paint] * rng.uniform(0.92, 1.08)
        return np.clip(image, 0, 255).round().astype(np.uint8)
    colors = _paint_colors(canvas, TARGET_PALETTE, rng, jitter=12.0)
    if shift.palette != 1.0:  # (skipped for the default: its bytes stay those of generator version 1)
        means = _source_means()
        source = np.stack([means[ROLES[role].name] for role, _ in canvas.paints]) if canvas.paints else colors
        colors = shift.palette * colors + (1.0 - shift.palette) * source
    roles = np.asarray([role for role, _ in canvas.paints], dtype=np.int64)[paint]
    fine_amp = np.zeros(len(ROLES), dtype=np.float32)
    coarse_amp = np.zeros(len(ROLES), dtype=np.float32)
    for index, role in enumerate(ROLES):
        fine_amp[index], coarse_amp[index] = TARGET_TEXTURE.get(role.name, (3, 3))
    fine_amp, coarse_amp = fine_amp * np.float32(shift.texture), coarse_amp * np.float32(shift.texture)
    fine = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
    coarse = _smooth_noise(rng, w, h, cell=6)
    image = colors[paint] + (fine_amp[roles] * fine + coarse_amp[roles] * coarse)[:, :, None]
    # lighting: a brightness gradient across the image, contrast and gamma change, colour cast
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.0 + rng.uniform(-0.25, 0.25) * (xs / w - 0.5) + rng.uniform(-0.2, 0.2) * (ys / h - 0.5)
    contrast = rng.uniform(0.75, 1.1)
    image = (image * light[:, :, None] - 128.0) * contrast + 128.0 + rng.uniform(-15, 15)
    image = image * cast[None, None, :]
    gamma = rng.uniform(0.85, 1.2)
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** gamma
    image = image + rng.normal(0.0, rng.uniform(3.0, 8.0) * shift.noise, image.shape)  # sensor noise
    pil = Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8))
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.0)) * shift.blur)))


def render_scene(rng: np.random.Generator, size: tuple[int, int], domain: str, *,
                 cast: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 shift: str = "default") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene of ``domain`` ("source" or "target"): (RGB uint8 (H, W, 3), class map, instance map).
    ``shift`` (a name of :data:`SHIFTS`) sets the strength of the target's appearance shift.

    The class map holds trainIds, or the pseudo-classes VOID/LANE/EGO of :mod:`data.scenes`.
    """
    canvas = Canvas(*size)
    draw_street(canvas, rng, SOURCE_STYLE if domain == "source" else TARGET_STYLE)
    paint = canvas.paint_map()
    paint_class = np.asarray([ROLES[role].train_id for role, _ in canvas.paints], dtype=np.uint8)
    paint_instance = np.asarray([obj if ROLES[role].thing else 0 for role, obj in canvas.paints], dtype=np.uint16)
    image = _render(paint, canvas, rng, domain, np.asarray(cast, dtype=np.float32), SHIFTS[shift])
    return image, paint_class[paint], paint_instance[paint]


def _inverse(mapping: dict[int, int]) -> dict[int, int]:
    return {train_id: raw for raw, train_id in mapping.items()}


def _source_id_lut() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint16)  # SYNTHIA 0 = void
    for train_id, synthia_id in _inverse(L.SYNTHIA_ID_TO_TRAINID).items():
        lut[train_id] = synthia_id
    lut[LANE] = 22  # SYNTHIA's lane-marking id (no Cityscapes class: ignored)
    return lut


def _target_id_lut() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # Cityscapes labelId 0 = unlabeled
    for train_id, label_id in _inverse(L.CITYSCAPES_LABELID_TO_TRAINID).items():
        lut[train_id] = label_id
    lut[LANE] = 7  # Cityscapes labels lane markings as road
    lut[EGO] = 1  # ego vehicle
    return lut


# ---------------------------------------------------------------------------------------------------------
# files


def _image_rng(seed: int, domain: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, domain, index]))


def _histogram(class_map: np.ndarray, counts: np.ndarray) -> None:
    counts += np.bincount(class_map.ravel(), minlength=256)


def _named_histogram(counts: np.ndarray) -> dict[str, int]:
    named = {name: int(counts[i]) for i, name in enumerate(L.CITYSCAPES_CLASSES)}
    named["ignore"] = int(counts[19:].sum())
    return named


def _city_cast(city: str) -> tuple[float, float, float]:
    # Group 0 slightly warm, group 1 slightly cool, val cities neutral: a small between-city shift.
    if city in CITYSCAPES_CITY_GROUPS["group0"]:
        return (1.04, 1.0, 0.95)
    if city in CITYSCAPES_CITY_GROUPS["group1"]:
        return (0.96, 1.0, 1.05)
    return (1.0, 1.0, 1.0)


def _spread(count: int, cities: tuple[str, ...]) -> list[tuple[str, int]]:
    """(city, index within city) for ``count`` images spread evenly over ``cities``."""
    per_city = [count // len(cities) + (1 if i < count % len(cities) else 0) for i in range(len(cities))]
    return [(city, k) for city, n in zip(cities, per_city) for k in range(n)]


def _write_source(root: Path, params: SyntheticParams, progress) -> dict:
    (root / "RGB").mkdir(parents=True)
    (root / "GT" / "LABELS").mkdir(parents=True)
    (root / "lists").mkdir()
    lut = _source_id_lut()
    total = params.num_source + params.num_source_val
    hist = {"train": np.zeros(256, np.int64), "val": np.zeros(256, np.int64)}
    for index in range(total):
        image, classes, instances = render_scene(_image_rng(params.seed, 0, index), params.source_size, "source")
        name = f"{index:07d}"
        write_image(root / "RGB" / f"{name}.png", image)
        label = np.stack([lut[classes], instances, np.zeros_like(instances)], axis=-1).astype(np.uint16)
        # cycle through all PNG filter types, so that readers are exercised on each of them
        write_png(root / "GT" / "LABELS" / f"{name}.png", label, filter_type=index % 5)
        _histogram(classes, hist["train" if index < params.num_source else "val"])
        progress()
    (root / "lists" / "train.txt").write_text("".join(f"{i:07d}\n" for i in range(params.num_source)))
    (root / "lists" / "val.txt").write_text("".join(f"{i:07d}\n" for i in range(params.num_source, total)))
    return {"dataset": "synthia", "path": "source", "size": list(params.source_size),
            "counts": {"train": params.num_source, "val": params.num_source_val},
            "class_histogram": {split: _named_histogram(h) for split, h in hist.items()}}


def _write_target(root: Path, params: SyntheticParams, progress) -> dict:
    lut = _target_id_lut()
    hist = {"train": np.zeros(256, np.int64), "val": np.zeros(256, np.int64)}
    cities: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    index = 0
    for split, count, city_names in (("train", params.num_target_train, TARGET_TRAIN_CITIES),
                                     ("val", params.num_target_val, CITYSCAPES_VAL_CITIES)):
        for city, k in _spread(count, city_names):
            image_dir = root / "leftImg8bit" / split / city
            label_dir = root / "gtFine" / split / city
            if city not in cities[split]:
                image_dir.mkdir(parents=True)
                label_dir.mkdir(parents=True)
                cities[split][city] = 0
            cities[split][city] += 1
            image, classes, _ = render_scene(_image_rng(params.seed, 1, index), params.target_size, "target",
                                             cast=_city_cast(city), shift=params.shift)
            stem = f"{city}_{k:06d}_000019"
            write_image(image_dir / f"{stem}_leftImg8bit.png", image)
            write_image(label_dir / f"{stem}_gtFine_labelIds.png", lut[classes])
            _histogram(classes, hist[split])
            index += 1
            progress()
    return {"dataset": "cityscapes", "path": "target", "size": list(params.target_size),
            "counts": {"train": params.num_target_train, "val": params.num_target_val}, "cities": cities,
            "class_histogram": {split: _named_histogram(h) for split, h in hist.items()}}


def _disk_usage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _existing(out: Path, params: SyntheticParams) -> dict | None:
    """The manifest of an identical benchmark in ``out``; None if ``out`` is absent or empty; else raise."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder; choose another OUT")
    if not any(out.iterdir()):
        return None
    manifest_path = out / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        raise FileExistsError(f"{out}: folder is not empty and holds no readable manifest.json (not a synthetic "
                              "benchmark, or an interrupted generation); nothing was written — remove it yourself "
                              "or choose another OUT") from None
    wanted = {"generator_version": GENERATOR_VERSION, "parameters": params.to_json()}
    found = {"generator_version": manifest.get("generator_version"), "parameters": manifest.get("parameters")}
    if found != wanted:
        raise FileExistsError(f"{out}: holds a synthetic benchmark made with different parameters {found}; "
                              f"wanted {wanted}. Nothing was written; choose another OUT")
    return manifest


def generate(out: str | Path, *, seed: int = 0, num_source: int = 400, num_source_val: int = 40,
             num_target_train: int = 300, num_target_val: int = 100, source_size: tuple[int, int] = (192, 112),
             target_size: tuple[int, int] = (192, 96), shift: str = "default",
             progress: bool = False) -> GenerateResult:
    """Write the synthetic benchmark into ``out`` (see the module docstring).

    ``out`` must not exist or be empty; if it holds a benchmark generated with the same parameters this is a
    no-op (``created=False``). Anything else raises ``FileExistsError``: nothing is ever overwritten or deleted.
    """
    params = SyntheticParams(seed, num_source, num_source_val, num_target_train, num_target_val,
                             tuple(source_size), tuple(target_size), shift)
    out = Path(out)
    start = time.perf_counter()
    manifest = _existing(out, params)
    if manifest is not None:
        return GenerateResult(out, False, time.perf_counter() - start, _disk_usage(out), manifest)
    out.mkdir(parents=True, exist_ok=True)
    total = num_source + num_source_val + num_target_train + num_target_val
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="synthetic benchmark", unit="img")
    tick = bar.update if bar is not None else (lambda: None)
    try:
        domains = {"source": _write_source(out / "source", params, tick),
                   "target": _write_target(out / "target", params, tick)}
    finally:
        if bar is not None:
            bar.close()
    manifest = {"generator": "dastudy data.synthetic", "generator_version": GENERATOR_VERSION,
                "parameters": params.to_json(), "seed": seed, "domains": domains,
                "class_names": list(L.CITYSCAPES_CLASSES)}
    # the manifest is written last: its presence marks a complete benchmark
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return GenerateResult(out, True, time.perf_counter() - start, _disk_usage(out), manifest)
