#!/usr/bin/env python3
"""Summarise bench/tcp.sh raw.tsv: medians over repetitions, Tether's ratios to HAProxy and NGINX.

usage: tcp_summarize.py [--details] RAW.tsv [RAW2.tsv ...]
raw.tsv columns (tab separated):
  layout rep workload name value cpu_per_unit errors foreign_pct rss_kb note
  workload conn: value = connections/s, cpu = relay CPU us per connection
  workload xfer: value = MB/s (1e6 bytes/s),  cpu = relay CPU s per GB moved
  workload idle: value = relay RSS growth per idle connection (bytes), cpu = 0,
                 errors = sampled connections no longer alive + connections not opened,
                 rss = relay RSS with them open (kB), note "alive=x/y opened=n/N ..."
  value FAIL = the run failed (relay did not start, wrong byte count, no wrk/idle_conns result)

Prints per layout: throughput (median), x direct, Tether/HAProxy and Tether/NGINX (> 1: Tether
faster; also paired: the median over repetitions of the ratio within each repetition), and the relays' CPU per unit (ratio < 1: Tether cheaper); for idle, bytes of RSS per
idle connection (ratio < 1: Tether smaller) and the sampled connections still alive.
--details adds one line per relay and workload: runs, median, min, max, spread, errors,
foreign load, RSS.
"""
import os
import re
import statistics
import sys
from collections import OrderedDict, defaultdict

WORK = OrderedDict([("conn", ("conn/s", "CPU us/conn")), ("xfer", ("MB/s", "CPU s/GB")),
                    ("idle", ("idle conn B (RSS)", None))])   # idle: no CPU row, no direct
ORDER = ["direct", "tether", "haproxy", "nginx"]
LAYOUT_DOC = {
    "S": "client, backend and relay all on cpu1",
    "A": "client on cpu0; backend + relay share cpu1",
    "B": "client + backend on cpu0; relay alone on cpu1",
    "U": "unpinned",
}


def load(paths):
    runs = defaultdict(list)   # (layout, workload, name) -> [dict]
    fails = defaultdict(int)
    layouts, names = OrderedDict(), OrderedDict()
    for path in paths:
        with open(path) as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) < 9:
                    continue
                layout, rep, wl, name = p[0], p[1], p[2], p[3]
                layouts.setdefault(layout, None)
                names.setdefault(name, None)
                if p[4] == "FAIL":
                    fails[(layout, wl, name)] += 1
                    continue
                runs[(layout, wl, name)].append({
                    "rep": rep, "value": float(p[4]), "cpu": float(p[5]), "errors": int(float(p[6])),
                    "foreign": float(p[7]), "rss": float(p[8]),
                    "alive": alive(p[9] if len(p) > 9 else ""),
                    "steal": steal(p[9] if len(p) > 9 else ""),
                })
    # Runs in which the hypervisor gave more than STEAL_MAX % of the CPUs to other guests are
    # left out when clean runs of the same relay exist (as summarize.py does).
    smax = float(os.environ.get("STEAL_MAX", "2"))
    for k, v in list(runs.items()):
        clean = [r for r in v if r["steal"] <= smax]
        if clean:
            runs[k] = clean
    order = [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]
    return runs, fails, list(layouts), order


def alive(note):
    """(alive, sampled) from an idle note "alive=x/y ...", else None."""
    m = re.search(r"alive=(\d+)/(\d+)", note)
    return (int(m.group(1)), int(m.group(2))) if m else None


def steal(note):
    """steal % of a run's note "... steal=x" (0 when the run did not record it)."""
    m = re.search(r"steal=([\d.]+)", note)
    return float(m.group(1)) if m else 0.0


def alive_fmt(rs):
    a = [r["alive"] for r in rs if r["alive"]]
    return f"{sum(x for x, _ in a)}/{sum(y for _, y in a)}" if a else "-"


def med(rs, key):
    return statistics.median(r[key] for r in rs) if rs else None


def num(v, wl):
    if v is None:
        return "-"
    return f"{v:,.0f}" if wl in ("conn", "idle") else f"{v:,.1f}"


def cpu_fmt(v, wl):
    if v is None or wl == "idle":
        return "-"
    return f"{v:.1f}" if wl == "conn" else f"{v:.3f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def paired(rs, peer_rs):
    """Median over repetitions of (Tether's value / the peer's in the same repetition), each
    repetition's value being the median of its runs: a drift of the machine between
    repetitions moves both sides of each pair."""
    def by_rep(runs):
        reps = defaultdict(list)
        for r in runs:
            reps[r["rep"]].append(r["value"])
        return {k: statistics.median(v) for k, v in reps.items()}
    a, b = by_rep(rs), by_rep(peer_rs)
    pr = [a[k] / b[k] for k in a if k in b and b[k]]
    return f"{statistics.median(pr):.2f}" if pr else "-"


def main(argv):
    details = "--details" in argv
    paths = [a for a in argv if not a.startswith("--")]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    runs, fails, layouts, names = load(paths)
    relays = [n for n in names if n != "direct"]
    peers = [n for n in relays if n != "tether"]
    for layout in layouts:
        print(f"\n### layout {layout}" + (f" ({LAYOUT_DOC[layout]})" if layout in LAYOUT_DOC else ""))
        print()
        head = ["workload"] + names + [f"tether/{p}" for p in peers if "tether" in names]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for wl, (unit, cunit) in WORK.items():
            if not any((layout, wl, n) in runs or (layout, wl, n) in fails for n in names):
                continue
            m = {n: med(runs.get((layout, wl, n), []), "value") for n in names}
            c = {n: med(runs.get((layout, wl, n), []), "cpu") for n in names}
            row = [unit] + [num(m[n], wl) + (" (FAIL x%d)" % fails[(layout, wl, n)] if fails[(layout, wl, n)] else "")
                            for n in names]
            row += [ratio(m["tether"], m[p]) for p in peers if "tether" in names]
            print("| " + " | ".join(row) + " |")
            if wl == "idle":
                row = ["sampled conns alive"] + [alive_fmt(runs.get((layout, wl, n), [])) if n != "direct" else "-"
                                                 for n in names]
                row += ["" for p in peers if "tether" in names]
                print("| " + " | ".join(row) + " |")
                continue
            if "tether" in names and peers:
                row = [unit + " paired"] + ["" for n in names]
                row += [paired(runs.get((layout, wl, "tether"), []), runs.get((layout, wl, p), []))
                        for p in peers]
                print("| " + " | ".join(row) + " |")
            if "direct" in names:
                row = ["x direct"] + [ratio(m[n], m["direct"]) if n != "direct" else "1.00" for n in names]
                row += ["" for p in peers if "tether" in names]
                print("| " + " | ".join(row) + " |")
            row = [cunit + " (relay)"] + [cpu_fmt(c[n], wl) if n != "direct" else f"({cpu_fmt(c[n], wl)} backend)"
                                          for n in names]
            row += [ratio(c["tether"], c[p]) for p in peers if "tether" in names]
            print("| " + " | ".join(row) + " |")
        if details:
            print()
            print("| workload | name | runs | median | min | max | spread | cpu/unit | errors | foreign % | rss kB |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for wl in WORK:
                for n in names:
                    rs = runs.get((layout, wl, n), [])
                    if not rs and not fails[(layout, wl, n)]:
                        continue
                    vs = [r["value"] for r in rs]
                    md = med(rs, "value")
                    spread = f"{100 * (max(vs) - min(vs)) / md:.0f}%" if md else "-"
                    print(f"| {wl} | {n} | {len(rs)}" + (f" (+{fails[(layout, wl, n)]} FAIL)" if fails[(layout, wl, n)] else "")
                          + f" | {num(md, wl)} | {num(min(vs) if vs else None, wl)} | {num(max(vs) if vs else None, wl)}"
                          + f" | {spread} | {cpu_fmt(med(rs, 'cpu'), wl)} | {sum(r['errors'] for r in rs)}"
                          + f" | {num(med(rs, 'foreign'), 'conn')} | {num(med(rs, 'rss'), 'conn')} |")
    print()
    print("Ratios: throughput tether/peer > 1 means Tether is faster; CPU tether/peer < 1 means Tether "
          "spends less CPU per connection / per GB; idle conn B tether/peer < 1 (lower is better) means "
          "Tether's RSS grows less per idle relayed connection. Medians over the repetitions; 'paired' = "
          "median over repetitions of (Tether / peer in the same repetition). Runs in which the hypervisor "
          "took more than STEAL_MAX (default 2) % of the CPUs (steal) are left out when clean runs of the "
          "relay exist.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
