"""Procedural street scenes for the synthetic benchmark: geometry only.

A scene is painted on one integer canvas: every drawn primitive gets a fresh *paint id*, and the paint table
records its :class:`Role` (which fixes the class) and the object it belongs to. The label map, the instance map
and — in :mod:`data.synthetic` — the domain-specific appearance are all lookups on that canvas, so the same
geometry can be rendered in different styles and labels never disagree with pixels.

The layout is a one-point-perspective street: sky, a far skyline, building facades along both sides converging
to a vanishing point, sidewalks, the road with lane markings, walls/fences/trees along the sidewalks, poles with
traffic lights and signs, then cars, buses, persons, riders on bicycles/motorcycles, painted far to near.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["Role", "ROLES", "ROLE_INDEX", "VOID", "LANE", "EGO", "SceneStyle", "Canvas", "draw_street"]

# Pseudo-classes beyond the 19 trainIds; each domain decides how to encode them.
VOID, LANE, EGO = 255, 254, 253


@dataclass(frozen=True)
class Role:
    name: str
    train_id: int  # Cityscapes trainId, or VOID / LANE (lane marking) / EGO (ego-vehicle hood)
    thing: bool = False  # countable object: gets an instance id in the SYNTHIA label's channel 1


ROLES: tuple[Role, ...] = (
    Role("void", VOID), Role("sky", 10), Role("building", 2), Role("window", 2), Role("road", 0),
    Role("lane", LANE), Role("sidewalk", 1), Role("curb", 1), Role("vegetation", 8), Role("trunk", 8),
    Role("terrain", 9), Role("wall", 3), Role("fence", 4), Role("fence_bar", 4), Role("pole", 5),
    Role("light_box", 6), Role("lamp", 6), Role("sign", 7), Role("car", 13, True), Role("car_window", 13, True),
    Role("wheel", 13, True), Role("bus", 15, True), Role("bus_window", 15, True), Role("person", 11, True),
    Role("skin", 11, True), Role("rider", 12, True), Role("bicycle", 18, True), Role("motorcycle", 17, True),
    Role("ego", EGO),
)
ROLE_INDEX = {role.name: index for index, role in enumerate(ROLES)}


@dataclass(frozen=True)
class SceneStyle:
    """Geometric tendencies of a domain (small shifts between domains, like real camera set-ups)."""

    horizon: tuple[float, float]  # horizon row as a fraction of the height
    object_scale: float  # size of objects relative to their distance
    ego_hood: bool  # Cityscapes-like ego-vehicle hood at the bottom (ignored in labels)
    terrain: bool  # grass verges (Cityscapes has terrain, SYNTHIA does not)
    lane_role: str = "lane"  # SYNTHIA labels lane markings separately (ignored); Cityscapes calls them road


class Canvas:
    """An integer paint canvas; ``paints[i] = (role index, object id)`` for paint id ``i`` (0 = void)."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.image = Image.new("I", (width, height), 0)
        self.draw = ImageDraw.Draw(self.image)
        self.paints: list[tuple[int, int]] = [(ROLE_INDEX["void"], 0)]
        self.objects = 0

    def new_object(self) -> int:
        self.objects += 1
        return self.objects

    def _paint(self, role: str, obj: int) -> int:
        self.paints.append((ROLE_INDEX[role], obj))
        return len(self.paints) - 1

    def polygon(self, role: str, points, obj: int = 0) -> None:
        self.draw.polygon([(float(x), float(y)) for x, y in points], fill=self._paint(role, obj))

    def rect(self, role: str, x0, y0, x1, y1, obj: int = 0) -> None:
        if x1 - x0 >= 0.5 and y1 - y0 >= 0.5:
            self.draw.rectangle([float(x0), float(y0), float(x1), float(y1)], fill=self._paint(role, obj))

    def ellipse(self, role: str, x0, y0, x1, y1, obj: int = 0) -> None:
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            self.draw.ellipse([float(x0), float(y0), float(x1), float(y1)], fill=self._paint(role, obj))

    def line(self, role: str, points, width: float, obj: int = 0) -> None:
        self.draw.line([(float(x), float(y)) for x, y in points], fill=self._paint(role, obj),
                       width=max(1, int(round(width))))

    def paint_map(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.int32)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


class _Street:
    """Perspective helpers: lines through the vanishing point, depth ``t`` in (0, 1] from horizon to bottom."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, style: SceneStyle):
        self.rng, self.w, self.h, self.style = rng, width, height, style
        self.yh = height * rng.uniform(*style.horizon)
        self.xv = width * rng.uniform(0.38, 0.62)
        self.road_center = self.xv + width * rng.uniform(-0.12, 0.12)
        self.road_half = width * rng.uniform(0.32, 0.55)
        self.sidewalk = width * rng.uniform(0.12, 0.3)

    def y_at(self, t: float) -> float:
        return _lerp(self.yh, self.h, t)

    def x_at(self, x_bottom: float, t: float) -> float:
        """x at depth t on the ground line that meets the bottom row at x_bottom."""
        return _lerp(self.xv, x_bottom, t)

    def scale(self, t: float) -> float:
        """Pixel size of one 'unit' (about an object height) at depth t."""
        return (self.y_at(t) - self.yh) * self.style.object_scale

    @property
    def road_left(self) -> float:
        return self.road_center - self.road_half

    @property
    def road_right(self) -> float:
        return self.road_center + self.road_half

    def outer(self, side: int) -> float:
        """Bottom x of the outer sidewalk edge (facade base) on side -1 (left) or +1 (right)."""
        return self.road_left - self.sidewalk if side < 0 else self.road_right + self.sidewalk


def draw_street(canvas: Canvas, rng: np.random.Generator, style: SceneStyle) -> None:
    """Paint one random street scene on ``canvas``."""
    s = _Street(rng, canvas.width, canvas.height, style)
    canvas.rect("sky", 0, 0, canvas.width, canvas.height)
    _skyline(canvas, s)
    _ground(canvas, s)
    for side in (-1, 1):
        _facades(canvas, s, side)
        _roadside(canvas, s, side)
    _objects(canvas, s)
    if style.ego_hood:
        top = canvas.height * (1 - rng.uniform(0.07, 0.12))
        canvas.polygon("ego", [(-1, canvas.height), (-1, top + 4), (canvas.width * 0.2, top),
                               (canvas.width * 0.8, top), (canvas.width + 1, top + 4), (canvas.width + 1, canvas.height)])


def _skyline(canvas: Canvas, s: _Street) -> None:
    x = -s.w * s.rng.uniform(0.0, 0.1)
    while x < s.w:
        width = s.w * s.rng.uniform(0.05, 0.16)
        if s.rng.random() < 0.8:
            role = "building" if s.rng.random() < 0.8 else "vegetation"
            top = s.yh - s.h * s.rng.uniform(0.04, 0.25)
            if role == "vegetation":
                canvas.ellipse(role, x, top, x + width, s.yh + 2 * (s.yh - top))
            else:
                canvas.rect(role, x, top, x + width, s.yh + 1, canvas.new_object())
        x += width


def _ground(canvas: Canvas, s: _Street) -> None:
    h, far = s.h + 1, s.w * 0.004
    canvas.polygon("sidewalk", [(s.xv - far * 3, s.yh), (s.xv + far * 3, s.yh), (s.outer(1), h), (s.outer(-1), h)])
    if s.style.terrain and s.rng.random() < 0.5:  # a grass verge between sidewalk and road
        for side in (-1, 1):
            edge = s.road_left if side < 0 else s.road_right
            verge = edge + side * s.sidewalk * s.rng.uniform(0.3, 0.6)
            canvas.polygon("terrain", [(s.xv, s.yh), (edge, h), (verge, h)])
    canvas.polygon("road", [(s.xv - far, s.yh), (s.xv + far, s.yh), (s.road_right, h), (s.road_left, h)])
    for edge in (s.road_left, s.road_right):  # curbs are sidewalk in both label sets
        canvas.polygon("curb", [(s.xv, s.yh), (edge, h), (edge + (s.road_half * 0.04 if edge > s.xv else -s.road_half * 0.04), h)])
    lane_x = s.road_center + s.road_half * s.rng.uniform(-0.15, 0.15)
    t = 0.05
    while t < 1.0:  # dashed centre line, dashes lengthen towards the camera
        t_end = min(1.0, t * 1.35)
        width0, width1 = s.road_half * 0.03 * t, s.road_half * 0.03 * t_end
        x0, x1 = s.x_at(lane_x, t), s.x_at(lane_x, t_end)
        canvas.polygon(s.style.lane_role, [(x0 - width0, s.y_at(t)), (x0 + width0, s.y_at(t)),
                                           (x1 + width1, s.y_at(t_end)), (x1 - width1, s.y_at(t_end))])
        t = t_end * 1.35


def _facades(canvas: Canvas, s: _Street, side: int) -> None:
    """Buildings along one side, as quads between the facade base line and per-building top lines."""
    base_bottom = s.outer(side)
    edge_x = -1.0 if side < 0 else s.w + 1.0
    t_far = s.rng.uniform(0.05, 0.15)
    x_far = s.x_at(base_bottom, t_far)

    def base_y(x: float) -> float:  # the base line through the vanishing point and (base_bottom, h)
        return s.yh + (s.h - s.yh) * (x - s.xv) / (base_bottom - s.xv)

    # split [x_far, edge_x] into buildings that widen towards the camera
    bounds, x = [x_far], x_far
    while (x - edge_x) * side < 0:
        x = x + side * max(3.0, abs(x - s.xv) * s.rng.uniform(0.3, 0.8))
        bounds.append(x)
    for xa, xb in zip(bounds[:-1], bounds[1:]):
        if s.rng.random() < 0.12:
            continue  # a gap (sky/skyline shows through)
        rise = s.rng.uniform(0.6, 2.8)  # building height relative to its distance from the horizon
        top_a, top_b = s.yh - rise * (base_y(xa) - s.yh), s.yh - rise * (base_y(xb) - s.yh)
        obj = canvas.new_object()
        role = "building" if s.rng.random() < 0.85 else "vegetation"
        canvas.polygon(role, [(xa, top_a), (xb, top_b), (xb, base_y(xb)), (xa, base_y(xa))], obj)
        if role == "building":
            _windows(canvas, s, xa, xb, (top_a, top_b), (base_y(xa), base_y(xb)), obj)


def _windows(canvas: Canvas, s: _Street, xa, xb, tops, bases, obj: int) -> None:
    cols, rows = int(s.rng.integers(2, 5)), int(s.rng.integers(3, 7))
    if abs(xb - xa) < 6:
        return
    for c in range(cols):
        u0, u1 = (c + 0.25) / cols, (c + 0.75) / cols
        for r in range(rows):
            v0, v1 = (r + 0.2) / (rows + 0.5), (r + 0.6) / (rows + 0.5)
            quad = []
            for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1)):
                x = _lerp(xa, xb, u)
                quad.append((x, _lerp(_lerp(tops[0], tops[1], u), _lerp(bases[0], bases[1], u), v)))
            canvas.polygon("window", quad, obj)


def _roadside(canvas: Canvas, s: _Street, side: int) -> None:
    """Walls/fences along the facade base, trees and poles (with lights/signs) on the sidewalk."""
    base_bottom = s.outer(side)
    if s.rng.random() < 0.45:
        role = "wall" if s.rng.random() < 0.5 else "fence"
        t0, t1 = sorted(s.rng.uniform(0.1, 1.0, 2))
        t1 = max(t1, t0 + 0.2)
        height = s.rng.uniform(0.25, 0.45)
        p0, p1 = (s.x_at(base_bottom, t0), s.y_at(t0)), (s.x_at(base_bottom, t1), s.y_at(t1))
        top0, top1 = p0[1] - height * s.scale(t0), p1[1] - height * s.scale(t1)
        canvas.polygon(role, [(p0[0], top0), (p1[0], top1), p1, p0])
        if role == "fence":
            for k in range(1, 8):
                u = k / 8
                x, y_low = _lerp(p0[0], p1[0], u), _lerp(p0[1], p1[1], u)
                canvas.line("fence_bar", [(x, y_low), (x, _lerp(top0, top1, u))], 0.012 * s.scale(_lerp(t0, t1, u)) + 1)
    for _ in range(int(s.rng.integers(0, 4))):  # trees
        t = s.rng.uniform(0.15, 0.9)
        x = s.x_at(_lerp(base_bottom, s.road_left if side < 0 else s.road_right, s.rng.uniform(0.2, 0.6)), t)
        y, unit = s.y_at(t), s.scale(t)
        canvas.rect("trunk", x - 0.03 * unit, y - 0.9 * unit, x + 0.03 * unit, y)
        r = unit * s.rng.uniform(0.35, 0.6)
        canvas.ellipse("vegetation", x - r, y - 0.9 * unit - 1.4 * r, x + r, y - 0.9 * unit + 0.4 * r)
    for _ in range(int(s.rng.integers(1, 4))):  # poles
        t = s.rng.uniform(0.12, 0.95)
        edge = s.road_left if side < 0 else s.road_right
        x = s.x_at(_lerp(edge, base_bottom, s.rng.uniform(0.1, 0.3)), t)
        y, unit = s.y_at(t), s.scale(t)
        top = y - unit * s.rng.uniform(1.0, 1.5)
        half = max(0.5, 0.02 * unit)
        canvas.rect("pole", x - half, top, x + half, y)
        kind = s.rng.random()
        if kind < 0.4:  # traffic light: a dark box with one lit lamp
            bw, bh = 0.09 * unit, 0.25 * unit
            canvas.rect("light_box", x - bw, top, x + bw, top + bh)
            lamp = int(s.rng.integers(0, 3))
            canvas.ellipse("lamp", x - 0.6 * bw, top + bh * (0.1 + 0.3 * lamp), x + 0.6 * bw, top + bh * (0.35 + 0.3 * lamp))
        elif kind < 0.8:  # traffic sign: disc, triangle or plate
            r = 0.12 * unit
            shape = s.rng.random()
            if shape < 0.4:
                canvas.ellipse("sign", x - r, top, x + r, top + 2 * r)
            elif shape < 0.7:
                canvas.polygon("sign", [(x - r, top), (x + r, top), (x, top + 1.8 * r)])
            else:
                canvas.rect("sign", x - 1.3 * r, top, x + 1.3 * r, top + 1.4 * r)


def _objects(canvas: Canvas, s: _Street) -> None:
    """Vehicles, persons and riders, painted far to near."""
    items: list[tuple[float, str, float]] = []  # (depth t, kind, lateral position in [-1, 1] of the road)
    for _ in range(int(s.rng.integers(1, 5))):
        items.append((s.rng.uniform(0.12, 0.95), "car", s.rng.uniform(-0.8, 0.8)))
    if s.rng.random() < 0.3:
        items.append((s.rng.uniform(0.15, 0.7), "bus", s.rng.uniform(-0.6, 0.6)))
    for _ in range(int(s.rng.integers(0, 3))):
        items.append((s.rng.uniform(0.15, 0.95), "rider", s.rng.choice([-0.85, 0.85]) + s.rng.uniform(-0.1, 0.1)))
    for _ in range(int(s.rng.integers(1, 6))):
        items.append((s.rng.uniform(0.12, 0.98), "person", s.rng.choice([-1.0, 1.0]) * s.rng.uniform(1.08, 1.35)))
    for t, kind, lateral in sorted(items):
        x_bottom = s.road_center + lateral * s.road_half
        x, y, unit = s.x_at(x_bottom, t), s.y_at(t), s.scale(t)
        {"car": _car, "bus": _bus, "rider": _rider, "person": _person}[kind](canvas, s.rng, x, y, unit)


def _car(canvas: Canvas, rng, x, y, unit) -> None:
    obj = canvas.new_object()
    w, h = unit * rng.uniform(0.75, 0.95), unit * rng.uniform(0.38, 0.48)
    canvas.rect("car", x - w / 2, y - 0.62 * h, x + w / 2, y - 0.08 * h, obj)
    canvas.polygon("car", [(x - 0.38 * w, y - 0.6 * h), (x - 0.28 * w, y - h), (x + 0.28 * w, y - h), (x + 0.38 * w, y - 0.6 * h)], obj)
    canvas.polygon("car_window", [(x - 0.32 * w, y - 0.62 * h), (x - 0.25 * w, y - 0.92 * h),
                                  (x + 0.25 * w, y - 0.92 * h), (x + 0.32 * w, y - 0.62 * h)], obj)
    for side in (-1, 1):
        cx = x + side * 0.32 * w
        canvas.ellipse("wheel", cx - 0.1 * w, y - 0.22 * h, cx + 0.1 * w, y, obj)


def _bus(canvas: Canvas, rng, x, y, unit) -> None:
    obj = canvas.new_object()
    w, h = unit * rng.uniform(1.1, 1.4), unit * rng.uniform(0.85, 1.0)
    canvas.rect("bus", x - w / 2, y - h, x + w / 2, y - 0.06 * h, obj)
    for k in range(4):
        u0 = -0.45 + k * 0.23
        canvas.rect("bus_window", x + u0 * w, y - 0.9 * h, x + (u0 + 0.18) * w, y - 0.55 * h, obj)
    for side in (-1, 1):
        cx = x + side * 0.33 * w
        canvas.ellipse("wheel", cx - 0.07 * w, y - 0.14 * h, cx + 0.07 * w, y, obj)


def _person(canvas: Canvas, rng, x, y, unit, role: str = "person", obj: int | None = None) -> None:
    obj = canvas.new_object() if obj is None else obj
    h = unit * rng.uniform(0.5, 0.65)
    w = h * 0.28
    canvas.rect(role, x - w / 2, y - 0.82 * h, x + w / 2, y - 0.4 * h, obj)
    canvas.line(role, [(x - w * 0.25, y - 0.42 * h), (x - w * 0.3, y)], w * 0.35, obj)
    canvas.line(role, [(x + w * 0.25, y - 0.42 * h), (x + w * 0.3, y)], w * 0.35, obj)
    canvas.ellipse("skin" if role == "person" else role, x - w * 0.3, y - h, x + w * 0.3, y - 0.8 * h, obj)


def _rider(canvas: Canvas, rng, x, y, unit) -> None:
    vehicle = "bicycle" if rng.random() < 0.6 else "motorcycle"
    w = unit * (0.45 if vehicle == "bicycle" else 0.55)
    r = w * (0.22 if vehicle == "bicycle" else 0.2)
    vobj, robj = canvas.new_object(), canvas.new_object()
    _person(canvas, rng, x, y - 1.2 * r, unit * 0.85, role="rider", obj=robj)
    for side in (-1, 1):
        cx = x + side * (w / 2 - r)
        canvas.ellipse(vehicle, cx - r, y - 2 * r, cx + r, y, vobj)
    if vehicle == "bicycle":
        canvas.line(vehicle, [(x - w / 2 + r, y - r), (x, y - 2.2 * r), (x + w / 2 - r, y - r)], max(1, 0.1 * r), vobj)
    else:
        canvas.rect(vehicle, x - w * 0.35, y - 2.4 * r, x + w * 0.35, y - 1.1 * r, vobj)
