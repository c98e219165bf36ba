#!/usr/bin/env python3
"""Tables and throughput-vs-machines plots of a `scripts/bench-scale.sh` run.

Usage: bench-scale-report.py RESULTS.jsonl PLOT_DIR [CPU.jsonl] > tables.md

Labels are SYSTEM-qQUOTA-nN (e.g. many-q0.2-n6, etcd-q0.15-n3). First the issue's goals
(6 stores against 3 at 0.2 core, 9 against 3 at 0.15, raw-put and raw-get at 64 clients; one
region flat; 9 stores against etcd's best), then for each quota, workload and client count:
throughput per system and machine count, the ratio to the smallest count of the same system,
and the load generator's CPU (cores) so that a saturated machine is visible. With CPU.jsonl
(written by bench-scale.sh around each point): each machine's CPU (mean and busiest, in cores),
the share of its CFS periods throttled (how often it hit its quota), and PD's CPU.
Plots are SVG (no plotting library needed): PLOT_DIR/<workload>-c<clients>-q<quota>.svg.
"""
import json
import re
import sys
from collections import defaultdict

LABEL = re.compile(r"^(?P<system>[a-z]+)-q(?P<quota>[0-9.]+)-n(?P<n>[0-9]+)$")
NAMES = {"many": "Flotilla, many regions", "single": "Flotilla, one region", "etcd": "etcd"}
COLOURS = {"many": "#1f77b4", "single": "#ff7f0e", "etcd": "#2ca02c"}


def load(path):
    points = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            m = LABEL.match(r["label"])
            if not m or r["workload"].startswith("load"):
                continue
            key = (m["quota"], r["workload"], r["clients"], m["system"], int(m["n"]))
            points[key] = r
    return points


def load_cpu(path):
    cpu = {}
    if path:
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                cpu[(r["label"], r["workload"], r["clients"])] = r
    return cpu


def cpu_cells(c):
    if not c or not c["machines"]:
        return "— | — | —"
    cores = [m["cores"] for m in c["machines"]]
    thr = [m["throttled"] for m in c["machines"]]
    return (f"{sum(cores) / len(cores):.2f} / {max(cores):.2f} | "
            f"{100 * sum(thr) / len(thr):.0f}% / {100 * max(thr):.0f}% | {c['pd_cores']:.2f}")


def goals(points):
    """The issue's goal ratios, where the run has the points for them."""
    ops = lambda quota, w, system, n: points.get((quota, w, 64, system, n), {}).get("ops_per_sec")
    rows = []
    for w in ("raw-put", "raw-get"):
        for quota, n, want in (("0.2", 6, 1.6), ("0.15", 9, 2.4)):
            for system in ("many", "single"):
                a, b = ops(quota, w, system, 3), ops(quota, w, system, n)
                if a and b:
                    goal = f">= {want}x" if system == "many" else "flat (about 1x)"
                    ok = b / a >= want if system == "many" else 0.8 <= b / a <= 1.25
                    rows.append(f"| {NAMES[system]}, {n} vs 3 stores at {quota} core, {w} x64 | "
                                f"{b:.0f} / {a:.0f} = {b / a:.2f}x | {goal} | {'met' if ok else 'MISSED'} |")
        etcd = [v["ops_per_sec"] for (q, wl, c, s, n), v in points.items()
                if q == "0.15" and wl == w and c == 64 and s == "etcd"]
        nine = ops("0.15", w, "many", 9)
        if etcd and nine:
            r = nine / max(etcd)
            rows.append(f"| Flotilla 9 stores vs etcd's best at 0.15 core, {w} x64 | "
                        f"{nine:.0f} / {max(etcd):.0f} = {r:.2f}x | >= 3x | {'met' if r >= 3 else 'MISSED'} |")
    if rows:
        print("#### The issue's goals\n")
        print("| comparison | measured | goal | |")
        print("|---|---|---|---|")
        print("\n".join(rows))
        print()


def svg(path, title, series):
    """series: {system: [(n, ops)]}"""
    w, h, pad = 640, 400, 60
    xs = sorted({n for pts in series.values() for n, _ in pts})
    top = max((ops for pts in series.values() for _, ops in pts), default=1) * 1.1 or 1
    xmax = max(xs) if xs else 1
    X = lambda n: pad + (w - 2 * pad) * n / xmax
    Y = lambda v: h - pad - (h - 2 * pad) * v / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w/2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
           f'<text x="{w/2}" y="{h-15}" text-anchor="middle">machines (stores or etcd members)</text>',
           f'<text x="15" y="{h/2}" transform="rotate(-90 15 {h/2})" text-anchor="middle">ops/s</text>']
    for n in xs:
        out.append(f'<text x="{X(n)}" y="{h-pad+15}" text-anchor="middle">{n}</text>')
    for i in range(5):
        v = top * i / 4
        out.append(f'<text x="{pad-5}" y="{Y(v)+4}" text-anchor="end">{v:.0f}</text>')
    for k, (system, pts) in enumerate(sorted(series.items())):
        pts = sorted(pts)
        c = COLOURS.get(system, "black")
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (c, " ".join(f"{X(n):.1f},{Y(v):.1f}" for n, v in pts)))
        for n, v in pts:
            out.append(f'<circle cx="{X(n):.1f}" cy="{Y(v):.1f}" r="3" fill="{c}"/>')
        out.append(f'<text x="{w-pad-150}" y="{pad+16*k}" fill="{c}">{NAMES.get(system, system)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    points = load(sys.argv[1])
    plot_dir = sys.argv[2]
    cpu_by_point = load_cpu(sys.argv[3] if len(sys.argv) > 3 else None)
    goals(points)
    groups = defaultdict(dict)
    for (quota, workload, clients, system, n), r in points.items():
        groups[(quota, workload, clients)][(system, n)] = r
    for (quota, workload, clients) in sorted(groups, key=lambda g: (-float(g[0]), g[1], g[2])):
        g = groups[(quota, workload, clients)]
        print(f"#### {workload}, {clients} clients, {quota} core per machine\n")
        print("| system | machines | ops/s | vs fewest | p99 ms | errors | server CPU s/1k ops | "
              "load generator cores | machine cores mean / max | throttled mean / max | PD cores |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        series = defaultdict(list)
        for (system, n) in sorted(g, key=lambda k: (list(NAMES).index(k[0]) if k[0] in NAMES else 9, k[1])):
            r = g[(system, n)]
            base_n = min(m for s, m in g if s == system)
            base = g[(system, base_n)]["ops_per_sec"]
            ratio = r["ops_per_sec"] / base if base else 0
            server = r.get("server_cpu_s_per_kop")
            client = r.get("client_cpu_s")
            client_cores = f"{client / r['elapsed_s']:.2f}" if client is not None else "—"
            print(f"| {NAMES.get(system, system)} | {n} | {r['ops_per_sec']:.0f} | {ratio:.2f}x | "
                  f"{r['latency_ms']['p99']:.2f} | {r['errors']} | "
                  f"{'—' if server is None else f'{server:.3f}'} | {client_cores} | "
                  f"{cpu_cells(cpu_by_point.get((r['label'], workload, clients)))} |")
            series[system].append((n, r["ops_per_sec"]))
        print()
        svg(f"{plot_dir}/{workload}-c{clients}-q{quota}.svg",
            f"{workload}, {clients} clients, {quota} core per machine", series)


if __name__ == "__main__":
    main()
