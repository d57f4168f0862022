"""Draw docs/import_graph.png: minivid's top-level packages in rows by floor, arrows for their imports.

    python docs/import_graph.py                      # rewrites docs/import_graph.png
    python docs/import_graph.py PACKAGE_DIR OUT.png  # another package folder (a copy with a change to try)

One box per package (its lines and files), bottom floor at the bottom; an arrow from a package to each package it
imports, its width and label the number of module-to-module import edges; anything that breaks the floors in
orange. Everything comes from :mod:`minivid.utils.imports` (the same graph ``tests/test_layout.py`` checks). The
boxes of each floor are placed by a small deterministic search that keeps arrows out of the boxes they pass.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path as FilePath

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.path import Path  # noqa: E402

ROOT = FilePath(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minivid.utils.imports import (FLOORS, PACKAGE_DIR, cycles, layout_violations, module_graph,  # noqa: E402
                                   package_graph, package_lines, top_level)

OUT = FilePath(__file__).with_name("import_graph.png")
WIDTH, ROW, BOX_H = 100.0, 1.0, 0.5  # x span, floor spacing, box height (data units)
GAP, MARGIN, LANE, PAD = 7.0, 1.5, 1.4, 0.06  # between boxes, an arrow beside a box, between arrows; above/below
ORANGE, BLUE, GREY = "#e66100", "#3b5b92", "#888888"
# a caption for each floor, for the reader (which packages stand on which floor is minivid.utils.imports.FLOORS)
ROLES = {0: "utilities", 1: "kernels", 2: "shared layers", 3: "diffusion math, data", 4: "metrics", 5: "the models",
         6: "conditioning, zoo", 7: "pipelines", 8: "command line"}


def box_width(lines: int, arrows: int) -> float:
    """Wider with more lines (slowly), and wide enough for the ports of its arrows (in or out, the larger)."""
    return max(12.0 + 0.3 * math.sqrt(lines), 4.0 + 3.2 * arrows)


def ports(boxes, x, edges, toward=None):
    """Where each arrow leaves its importer (bottom edge) and reaches the imported package (top edge): the ports of a
    box spread along its edge in the order of the x each arrow heads for (``toward[edge] = (x out, x in)``; by
    default the centre of the box at the other end), so arrows leaving or reaching one box do not cross there."""
    toward = toward or {(a, b): (x[b], x[a]) for a, b in edges}
    out_ports, in_ports = {}, {}
    for a in boxes:
        w = boxes[a][1] * 0.9
        outgoing = sorted((e for e in edges if e[0] == a), key=lambda e: toward[e][0])
        incoming = sorted((e for e in edges if e[1] == a), key=lambda e: toward[e][1])
        for i, e in enumerate(outgoing):
            out_ports[e] = (x[a] - w / 2 + w * (i + 0.5) / len(outgoing), boxes[a][0] * ROW - BOX_H / 2)
        for i, e in enumerate(incoming):
            in_ports[e] = (x[a] - w / 2 + w * (i + 0.5) / len(incoming), boxes[a][0] * ROW + BOX_H / 2)
    return out_ports, in_ports


def routes(boxes, x, edges, passes: dict | None = None, toward=None):
    """Every arrow as a polyline: straight from importer to imported, except that where a segment would pass through
    a box it steps beside it (through that floor, vertically), a lane apart from the arrows already there.
    ``passes`` collects, per floor, the x at which each arrow crosses it (for :func:`cost`). Routed twice: the
    second time with the ports ordered by where the first routes went."""
    if toward is None:
        first = routes(boxes, x, edges, {}, {(a, b): (x[b], x[a]) for a, b in edges})
        toward = {e: (pts[1][0], pts[-2][0]) for e, pts in first.items()}
    out_ports, in_ports = ports(boxes, x, edges, toward)
    obstacles = sorted(((-f, n, f * ROW + BOX_H / 2, f * ROW - BOX_H / 2, x[n] - w / 2, x[n] + w / 2)
                        for n, (f, w) in boxes.items()))
    passes = {} if passes is None else passes
    paths = {}
    for a, b in sorted(edges, key=lambda e: (boxes[e[1]][0] - boxes[e[0]][0], out_ports[e][0])):
        points = _detour([out_ports[a, b], in_ports[a, b]], 0, [o for o in obstacles if o[1] not in (a, b)], passes)
        for p, q in zip(points, points[1:]):  # the floors this arrow crosses, and where
            for f in range(math.ceil(q[1] / ROW), math.floor(p[1] / ROW) + 1):
                if q[1] < f * ROW < p[1]:
                    passes.setdefault(f, []).append(p[0] + (p[1] - f * ROW) / (p[1] - q[1]) * (q[0] - p[0]))
        paths[a, b] = points
    return paths


def _detour(points, start, obstacles, passes, depth=0):
    """``points`` with a detour inserted wherever a segment (from index ``start`` on) passes through a box: beside
    the box, on the side that gives the shorter route (both are tried), a lane apart from the arrows already there."""
    blocked = _first_block(points, start, obstacles)
    if blocked is None or depth > 6:
        return points
    i, (minus_f, _, top, bottom, left, right) = blocked
    options = []
    for xs, step in ((left - MARGIN, -LANE), (right + MARGIN, LANE)):
        if not 0 <= xs <= WIDTH:
            continue
        while any(abs(xs - u) < LANE * 0.9 for u in passes.get(-minus_f, ())):
            xs += step
        route = _detour(points[:i + 1] + [(xs, top + PAD), (xs, bottom - PAD)] + points[i + 1:], i, obstacles,
                        passes, depth + 1)
        length = sum(math.hypot(q[0] - p[0], 10 * (q[1] - p[1])) for p, q in zip(route, route[1:]))
        options.append((len(route) + length / 10, route))
    return min(options, key=lambda o: o[0])[1] if options else points


def _first_block(points, start, obstacles):
    """(segment index, obstacle) of the first segment of ``points`` from ``start`` on that passes through a box."""
    for i in range(start, len(points) - 1):
        (px, py), (qx, qy) = points[i], points[i + 1]
        for obstacle in obstacles:
            _, _, top, bottom, left, right = obstacle
            top, bottom = top + PAD / 2, bottom - PAD / 2
            if qy >= top or py <= bottom:
                continue  # the segment does not reach this floor's boxes
            x1 = px + (py - min(top, py)) / (py - qy) * (qx - px)
            x2 = px + (py - max(bottom, qy)) / (py - qy) * (qx - px)
            if max(x1, x2) > left - MARGIN / 2 and min(x1, x2) < right + MARGIN / 2:
                return i, obstacle
    return None


def _cross(p1, p2, p3, p4) -> bool:
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    d1, d2, d3, d4 = orient(p3, p4, p1), orient(p3, p4, p2), orient(p1, p2, p3), orient(p1, p2, p4)
    return (d1 * d2 < 0) and (d3 * d4 < 0)


def cost(boxes, x, edges) -> float:
    """What the placement minimises: crossings first, then detours and the arrows' horizontal run."""
    passes: dict = {}
    paths = routes(boxes, x, edges, passes)
    close = sum(abs(u - v) < LANE * 0.9 for xs in passes.values() for i, u in enumerate(xs) for v in xs[i + 1:])
    segments = [(e, p, q, min(p[0], q[0]), max(p[0], q[0])) for e, pts in paths.items() for p, q in zip(pts, pts[1:])]
    crossings = sum(_cross(p1, q1, p2, q2) for i, (e1, p1, q1, lo1, hi1) in enumerate(segments)
                    for e2, p2, q2, lo2, hi2 in segments[i + 1:] if e1 != e2 and lo1 < hi2 and lo2 < hi1)
    detours = sum(len(pts) - 2 for pts in paths.values()) / 2
    run = sum(hi - lo for *_, lo, hi in segments)
    return 10 * crossings + 10 * close + 6 * detours + 0.1 * run


def layout(boxes: dict[str, tuple[int, float]], edges: list[tuple[str, str]], restarts: int = 8, steps: int = 1500,
           seed: int = 0) -> dict[str, float]:
    """Box centres (x): the best of a few annealing searches from random placements (deterministic: seeded)."""
    rng = random.Random(seed)
    rows: dict[int, list[str]] = {}
    for name, (floor, _) in sorted(boxes.items()):
        rows.setdefault(floor, []).append(name)
    best, best_x = math.inf, {}
    for _ in range(restarts):
        x = {}
        for names in rows.values():  # a random order and random gaps
            order = rng.sample(names, len(names))
            slack = WIDTH - sum(boxes[n][1] for n in order) - GAP * (len(order) - 1)
            left, cuts = 0.0, sorted(rng.uniform(0, slack) for _ in order)
            for n, cut, prev in zip(order, cuts, [0.0] + cuts):
                left += cut - prev
                x[n] = left + boxes[n][1] / 2
                left += boxes[n][1] + GAP

        def fits(name, cx):
            w = boxes[name][1]
            return w / 2 <= cx <= WIDTH - w / 2 and all(abs(cx - x[o]) >= (w + boxes[o][1]) / 2 + GAP
                                                        for o in rows[boxes[name][0]] if o != name)

        current = cost(boxes, x, edges)
        if current < best:
            best, best_x = current, dict(x)
        for step in range(steps):
            name = rng.choice(sorted(boxes))
            old = x[name]
            new = rng.uniform(0, WIDTH) if rng.random() < 0.2 else old + rng.gauss(0, 8)
            if not fits(name, new):
                continue
            x[name] = new
            c = cost(boxes, x, edges)
            temperature = 10 * (1 - step / steps) + 1e-3
            if c <= current or rng.random() < math.exp((current - c) / temperature):
                current = c
                if c < best:
                    best, best_x = c, dict(x)
            else:
                x[name] = old
    return best_x


def rounded(points, r=0.12):
    """A matplotlib Path through ``points`` with rounded corners (r: fraction of ROW)."""
    verts, codes = [points[0]], [Path.MOVETO]
    for prev, corner, nxt in zip(points, points[1:], points[2:]):
        def toward(a, b):
            d = math.dist(a, b)
            t = min(r * ROW / d, 0.5) if d else 0
            return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
        verts += [toward(corner, prev), corner, toward(corner, nxt)]
        codes += [Path.LINETO, Path.CURVE3, Path.CURVE3]
    verts.append(points[-1])
    codes.append(Path.LINETO)
    return Path(verts, codes)


def label_spot(points, others, placed, boxes, x, aspect):
    """Where an arrow's count goes: the point along it, from near its start, farthest from the boxes, the other
    arrows (``others``: points sampled along them) and the labels already placed, taking the first one that is clear
    of all of them (distances on the page: y divided by ``aspect``)."""
    def page(p):
        return p[0], p[1] / aspect

    lengths = [math.dist(page(p), page(q)) for p, q in zip(points, points[1:])]
    best, best_clear = None, -1.0
    for frac in [0.1 + 0.04 * i for i in range(21)]:
        d = frac * sum(lengths)
        for (p, q), length in zip(zip(points, points[1:]), lengths):
            if d <= length:
                t = d / length if length else 0
                c = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
                break
            d -= length
        if any(abs(c[0] - x[n]) < w / 2 + 1 and abs(c[1] - f * ROW) < BOX_H / 2 + 0.06 for n, (f, w) in boxes.items()):
            continue
        clear = min([math.dist(page(c), page(o)) / 1.6 for o in others] + [math.dist(page(c), page(o)) / 2.8
                                                                            for o in placed] + [9.9])
        if clear >= 1:
            return c
        if clear > best_clear:
            best, best_clear = c, clear
    return best if best is not None else points[0]


def sample(points, step=0.5):
    """Points every ``step`` (in x units; y counted as 10 x units per floor) along a polyline."""
    out = []
    for p, q in zip(points, points[1:]):
        n = max(1, int(math.hypot(q[0] - p[0], 10 * (q[1] - p[1])) / step))
        out += [(p[0] + i / n * (q[0] - p[0]), p[1] + i / n * (q[1] - p[1])) for i in range(n)]
    return out


def main(package_dir=PACKAGE_DIR, out=OUT) -> None:
    package_dir, out = FilePath(package_dir), FilePath(out)
    graph = module_graph(package_dir)
    packages = package_graph(graph)
    lines = package_lines(package_dir)
    files = {}
    for module in graph:
        files[top_level(module)] = files.get(top_level(module), 0) + 1
    violations = layout_violations(graph)
    component = {m: i for i, c in enumerate(cycles(graph)) for m in c}  # module -> its cycle
    in_cycle = set(component)
    bad_pairs = {(top_level(a), top_level(b)) for a in graph for b in graph[a]  # package pairs drawn in orange
                 if any(v.startswith(f"{a} imports {b}:") for v in violations)
                 or a in component and component[a] == component.get(b)}

    root = package_dir.name
    short = {p: p.split(".", 1)[1] for p in packages if "." in p}  # minivid.nn -> nn; the root is left out
    boxes = {}
    for p, s in short.items():
        ends = max(len(packages[p]), sum(p in packages[o] for o in packages if o != root))
        boxes[p] = (FLOORS.get(s, max(FLOORS.values()) + 1), box_width(lines[p], ends))
    missing = [s for s in FLOORS if f"{root}.{s}" not in packages]  # on the plan, not in the code yet
    for s in missing:
        boxes[f"{root}.{s}"] = (FLOORS[s], box_width(0, 0))
    edges = [(a, b) for a in packages if a in boxes for b in packages[a] if b in boxes]
    x = layout(boxes, edges)
    paths = routes(boxes, x, edges)

    top = max(f for f, _ in boxes.values())
    footer = 1 + len(violations)  # the note, then one line per violation
    height = 10.5 + 0.3 * (footer - 1)
    xlim, ylim = (-16, WIDTH + 1), (-0.56 - 0.22 * footer, top * ROW + 1.12)
    fig, ax = plt.subplots(figsize=(16, height), dpi=100)
    ax.set(xlim=xlim, ylim=ylim)
    ax.axis("off")
    aspect = ((ylim[1] - ylim[0]) / height) / ((xlim[1] - xlim[0]) / 16)  # y units per x unit on the page

    for f in range(top + 1):
        if f % 2 == 0:
            ax.axhspan(f * ROW - ROW / 2, f * ROW + ROW / 2, color="#f3f4f7", zorder=0, lw=0)
        ax.text(-15, f * ROW + 0.08, f"floor {f}" if f <= max(FLOORS.values()) else "no floor", fontsize=12,
                fontweight="bold", va="center", color="#333333")
        ax.text(-15, f * ROW - 0.14, ROLES.get(f, ""), fontsize=9.5, va="center", color=GREY)

    placed: list[tuple[float, float]] = []
    for (a, b), points in sorted(paths.items(), key=lambda kv: -packages[kv[0][0]][kv[0][1]]):
        n = packages[a][b]
        bad = (a, b) in bad_pairs
        color = ORANGE if bad else BLUE
        ax.add_patch(FancyArrowPatch(path=rounded(points), arrowstyle="-|>", mutation_scale=12 + 2 * min(n, 6),
                                     lw=0.8 + 0.7 * n, color=color, alpha=0.95 if bad else 0.6, zorder=1))
        others = [o for e, pts in paths.items() if e != (a, b) for o in sample(pts)]
        lx, ly = label_spot(points, others, placed, boxes, x, aspect)
        placed.append((lx, ly))
        ax.text(lx, ly, str(n), fontsize=10, ha="center", va="center", color=color, fontweight="bold", zorder=4,
                bbox=dict(boxstyle="circle,pad=0.18", fc="white", ec=color, lw=0.8))

    for name, (f, w) in boxes.items():
        s = name.split(".", 1)[1]
        planned = s in missing
        bad = s not in FLOORS or any(name == top_level(m) for m in in_cycle)
        ax.add_patch(FancyBboxPatch((x[name] - w / 2, f * ROW - BOX_H / 2), w, BOX_H, mutation_aspect=aspect,
                                    boxstyle="round,pad=0,rounding_size=1.2", zorder=3, lw=2.2 if bad else 1.2,
                                    fc="white" if planned else "#dfe7f3", ec=ORANGE if bad else "#2d4a7a",
                                    ls="--" if planned else "-"))
        label = f"{s}.py" if s == "__main__" else f"{s}/"
        ax.text(x[name], f * ROW + 0.08, label, fontsize=13, fontweight="bold", ha="center", va="center", zorder=5,
                color=GREY if planned else "black")
        info = "not yet written" if planned else (f"{lines[name]:,} lines" if s == "__main__" else
                                                  f"{lines[name]:,} lines, {files[name]} file{'s' * (files[name] > 1)}")
        ax.text(x[name], f * ROW - 0.12, info, fontsize=9.5, ha="center", va="center", zorder=5, color="#444444")

    n_edges = sum(len(t) for t in graph.values())
    ax.text(-15, top * ROW + 0.95, f"{root}: the import graph by floor", fontsize=17, fontweight="bold", va="center")
    status = ("no cycle, no upward or sideways import" if not violations and not in_cycle else
              f"{len(violations)} import(s) break the floors, {len(in_cycle)} module(s) in a cycle (orange)")
    ax.text(-15, top * ROW + 0.68, f"{len(graph)} modules, {n_edges} module-to-module imports; {status}. "
            "An arrow's label and width: the number of module imports from one package into the other.",
            fontsize=10.5, va="center", color="#333333")
    note = (f"Not drawn: imports inside a package; {root}/__init__.py ({lines.get(root, 0)} lines), exempt, re-exports "
            f"save_model/load_model from nn. Dashed: on the plan, not written yet. "
            "Regenerate: python docs/import_graph.py (checked by tests/test_layout.py).")
    ax.text(-15, -0.68, note, fontsize=9.5, va="center", color=GREY)
    for i, v in enumerate(violations):
        ax.text(-15, -0.9 - 0.22 * i, v, fontsize=10, va="center", color=ORANGE)

    fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01)
    fig.savefig(out, dpi=100, pil_kwargs={"optimize": True})  # 1600 px wide
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
