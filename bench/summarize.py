#!/usr/bin/env python3
"""Summarise bench/run.sh raw.tsv: medians over repetitions, Tether's ratios to each peer.

usage: summarize.py [--details] [--lb NAME] RAW.tsv [RAW2.tsv ...] ["S A"]
raw.tsv columns: layout rep scenario conns "k=v k=v ..." rss_kb hwm_kb  (or FAIL)

Prints, per layout: a headline table (req/s, p50, p99, RSS, x direct) and the ratio table
(Tether / peer for the matching scenario). --details adds the full table (spread, paired
ratios, CPU busy, foreign load, host-speed index, errors).
"""
import os
import random
import statistics
import sys
from collections import OrderedDict, defaultdict

# Tether scenario suffix -> matching scenario of each peer (same concurrency suffix appended).
MATCH = OrderedDict([
    ("rr", [("haproxy", "haproxy-rr"), ("nginx", "nginx-rr"), ("caddy", "caddy-rr")]),
    ("sticky+C", [("haproxy", "haproxy-cookie+C"), ("nginx", "nginx-iphash"), ("caddy", "caddy-cookie+C")]),
    ("sticky", [("haproxy", "haproxy-cookie"), ("nginx", "nginx-iphash"), ("caddy", "caddy-cookie")]),
])


def fmt_us(us):
    us = float(us)
    if us >= 1e6:
        return f"{us / 1e6:.2f}s"
    if us >= 1e3:
        return f"{us / 1e3:.2f}ms"
    return f"{us:.0f}us"


def load(raws):
    runs = defaultdict(list)           # (layout, scenario) -> [dict]
    fails = defaultdict(int)
    scen_order = OrderedDict()
    conns_of = {}
    for raw_id, raw in enumerate(raws):
        with open(raw) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 4:
                    continue
                layout, rep, scen = parts[0], parts[1], parts[2]
                scen_order.setdefault(scen, None)
                if parts[3] == "FAIL" or len(parts) < 7:
                    fails[(layout, scen)] += 1
                    continue
                conns, res, rss, hwm = parts[3], parts[4], parts[5], parts[6]
                d = dict(kv.split("=", 1) for kv in res.split())
                d = {k: float(v) for k, v in d.items()}
                d["rep"] = f"{rep}@{raw_id}"
                d["rss_kb"] = float(rss)
                d["hwm_kb"] = float(hwm)
                d["errors"] = sum(d[k] for k in d if k.startswith("err_"))
                runs[(layout, scen)].append(d)
                conns_of[scen] = conns
    return runs, fails, scen_order, conns_of


def ratio_interval(a, b, rounds=2000, seed=13):
    """90% bootstrap interval of median(a) / median(b): each side resampled with replacement.
    Says whether a ratio's distance from a target is more than this host's run-to-run noise."""
    if len(a) < 3 or len(b) < 3:
        return None
    rnd = random.Random(seed)
    rs = sorted(statistics.median(rnd.choices(a, k=len(a))) / statistics.median(rnd.choices(b, k=len(b)))
                for _ in range(rounds))
    return rs[int(0.05 * rounds)], rs[int(0.95 * rounds) - 1]


def fmt_interval(iv):
    return "-" if iv is None else f"{iv[0]:.2f}–{iv[1]:.2f}"


def split_sfx(scen):
    """'tether-rr@1000' -> ('tether-rr', '@1000')"""
    if "@" in scen:
        base, c = scen.split("@", 1)
        return base, "@" + c
    return scen, ""


def main():
    args = sys.argv[1:]
    details = "--details" in args
    args = [a for a in args if a != "--details"]
    lb = os.environ.get("LB_NAME", "tether")
    if "--lb" in args:
        i = args.index("--lb")
        lb = args[i + 1]
        del args[i:i + 2]
    raws = [a for a in args if os.path.isfile(a)]
    rest = [a for a in args if not os.path.isfile(a)]
    if not raws:
        print("summarize.py: no raw.tsv given or found", file=sys.stderr)
        sys.exit(1)
    order = rest[0].split() if rest else None
    runs, fails, scen_order, conns_of = load(raws)
    layouts = order or sorted({k[0] for k in runs} | {k[0] for k in fails})

    # drop runs contaminated by other processes (foreign cpu %) or by the hypervisor (steal %,
    # the time other guests took from this one), if clean runs exist
    fmax = float(os.environ.get("FOREIGN_MAX", "10"))
    smax = float(os.environ.get("STEAL_MAX", "2"))
    ntot = {k: len(v) for k, v in runs.items()}
    for k, v in list(runs.items()):
        clean = [r for r in v if r.get("foreign", 0) <= fmax and r.get("steal", 0) <= smax]
        if clean:
            runs[k] = clean

    def med(layout, scen, key):
        rs = runs.get((layout, scen))
        return statistics.median(r[key] for r in rs) if rs else None

    def direct_of(scen):
        c = conns_of.get(scen)
        return "direct" if conns_of.get("direct") == c else f"direct@{c}"

    def rps_ratios(layout, scen, other):
        """req/s of scen / other: ratio of medians, paired (median of per-repetition ratios),
        and the ratio of medians' 90% bootstrap interval"""
        byrep = {r["rep"]: r["rps"] for r in runs[(layout, other)]}
        pr = [r["rps"] / byrep[r["rep"]] for r in runs[(layout, scen)] if r["rep"] in byrep]
        paired = f"{statistics.median(pr):.2f}" if pr else "-"
        iv = ratio_interval([r["rps"] for r in runs[(layout, scen)]], [r["rps"] for r in runs[(layout, other)]])
        return med(layout, scen, "rps") / med(layout, other, "rps"), paired, fmt_interval(iv)

    for layout in layouts:
        print(f"\n### layout {layout}\n")
        # ---------------------------------------------------------------- headline
        print("| scenario | conns | req/s | p50 | p99 | CPU µs/req | RSS MiB | x direct | spread | errors "
              "| n |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for scen in scen_order:
            rs = runs.get((layout, scen), [])
            nf = fails.get((layout, scen), 0)
            if not rs:
                if nf:
                    print(f"| {scen} | | FAIL x{nf} | | | | | | | 0 |")
                continue
            rps = [r["rps"] for r in rs]
            m = statistics.median(rps)
            spread = (max(rps) - min(rps)) / m * 100 if m else 0
            d = med(layout, direct_of(scen), "rps")
            xdir = f"{m / d:.2f}" if d else "-"
            rss = "-" if scen.startswith("direct") else f"{med(layout, scen, 'rss_kb') / 1024:.1f}"
            failtxt = f" (+{nf} FAIL)" if nf else ""
            cpu = f"{med(layout, scen, 'cpu_us_req'):.1f}" if all("cpu_us_req" in r for r in rs) else "-"
            print(f"| {scen} | {conns_of[scen]} | {m:.0f} | {fmt_us(med(layout, scen, 'p50_us'))} | "
                  f"{fmt_us(med(layout, scen, 'p99_us'))} | {cpu} | {rss} | {xdir} | {spread:.0f}% | "
                  f"{med(layout, scen, 'errors'):.0f} | {len(rs)}/{ntot[(layout, scen)]}{failtxt} |")

        # ---------------------------------------------------------------- ratios
        rows = []
        for scen in scen_order:
            base, sfx = split_sfx(scen)
            if not base.startswith(lb + "-") or not runs.get((layout, scen)):
                continue
            kind = base[len(lb) + 1:]
            for peer, pscen in MATCH.get(kind, []):
                pscen = pscen + sfx
                if not runs.get((layout, pscen)):
                    continue
                t = runs[(layout, scen)]
                p = runs[(layout, pscen)]
                r_rps, paired, iv = rps_ratios(layout, scen, pscen)

                def ratio(key):
                    if not all(key in r for r in t + p):
                        return "-"
                    a, b = med(layout, scen, key), med(layout, pscen, key)
                    return f"{a / b:.2f}" if b else "-"
                rows.append(f"| {scen} | {pscen} | {conns_of[scen]} | **{r_rps:.2f}** | {iv} | {paired} | "
                            f"{ratio('p50_us')} | {ratio('p99_us')} | {ratio('cpu_us_req')} | "
                            f"{ratio('rss_kb')} |")
        if rows:
            print(f"\n{lb} / peer (layout {layout}): req/s > 1 = {lb} faster; p50, p99, CPU per "
                  f"request, RSS < 1 = {lb} lower (better)\n")
            print(f"| {lb} scenario | vs | conns | req/s | 90% interval | req/s paired | p50 | p99 | CPU/req | RSS |")
            print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in rows:
                print(r)

        # ---------------------------------------------------------------- own round robin
        # Each proxy's other scenarios against its own round robin at the same concurrency
        # (issue 13: cookie-sticky replaying >= 0.97, minting >= 0.9 of Tether's rr).
        own = []
        for scen in scen_order:
            base, sfx = split_sfx(scen)
            proxy, _, kind = base.partition("-")
            rr = f"{proxy}-rr{sfx}"
            if kind in ("", "rr") or not runs.get((layout, scen)) or not runs.get((layout, rr)):
                continue
            r_rps, paired, iv = rps_ratios(layout, scen, rr)
            cpu = med(layout, scen, "cpu_us_req") / med(layout, rr, "cpu_us_req") \
                if all("cpu_us_req" in r for r in runs[(layout, scen)] + runs[(layout, rr)]) else None
            own.append(f"| {scen} | {rr} | **{r_rps:.2f}** | {iv} | {paired} | "
                       f"{'-' if cpu is None else f'{cpu:.2f}'} |")
        if own:
            print(f"\nscenario / the same proxy's round robin (layout {layout}):\n")
            print("| scenario | vs | req/s | 90% interval | req/s paired | CPU/req |")
            print("|---|---|---:|---:|---:|---:|")
            for r in own:
                print(r)

        # ---------------------------------------------------------------- details
        if not details:
            continue
        print(f"\nDetails (layout {layout}):\n")
        print("| scenario | conns | req/s (median) | min..max (spread) | x direct | p50 | p99 | max | "
              "x dir paired | p50 x dir | p99 x dir | RSS MiB | HWM MiB | CPU0/CPU1 busy % | foreign % max | "
              "calib | errors | n |")
        print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
        for scen in scen_order:
            rs = runs.get((layout, scen), [])
            nf = fails.get((layout, scen), 0)
            if not rs:
                if nf:
                    print(f"| {scen} | | FAIL x{nf} | | | | | | | | | | | | | | | 0 |")
                continue
            conns = conns_of[scen]
            rps = [r["rps"] for r in rs]
            m = {k: statistics.median(r[k] for r in rs)
                 for k in ("rps", "p50_us", "p99_us", "max_us", "rss_kb", "hwm_kb", "errors")}
            cpus = "/".join(f"{statistics.median(r[c] for r in rs):.0f}"
                            for c in ("cpu0", "cpu1") if all(c in r for r in rs)) or "-"
            foreign = f"{max(r.get('foreign', 0) for r in rs):.0f}"
            cal = [min(r["calib0"], r["calib1"]) for r in rs if "calib0" in r and "calib1" in r]
            calib = f"{statistics.median(cal):.2f}" if cal else "-"
            lo, hi = min(rps), max(rps)
            spread = (hi - lo) / m["rps"] * 100 if m["rps"] else 0
            direct = direct_of(scen)
            dr = runs.get((layout, direct))
            paired = "-"
            if dr and scen != direct:
                byrep = {r["rep"]: r["rps"] for r in dr}
                pr = [r["rps"] / byrep[r["rep"]] for r in rs if r["rep"] in byrep]
                if pr:
                    paired = f"{statistics.median(pr):.2f}"
                drps = statistics.median(r["rps"] for r in dr)
                dp50 = statistics.median(r["p50_us"] for r in dr)
                dp99 = statistics.median(r["p99_us"] for r in dr)
                ratio = f"{m['rps'] / drps:.2f}"
                p50r = f"{m['p50_us'] / dp50:.2f}" if dp50 else "-"
                p99r = f"{m['p99_us'] / dp99:.2f}" if dp99 else "-"
            elif scen == direct:
                ratio, p50r, p99r, paired = "1.00", "1.00", "1.00", "1.00"
            else:
                ratio = p50r = p99r = "-"
            isdir = scen.startswith("direct")
            rss = "-" if isdir else f"{m['rss_kb'] / 1024:.1f}"
            hwm = "-" if isdir else f"{m['hwm_kb'] / 1024:.1f}"
            failtxt = f" (+{nf} FAIL)" if nf else ""
            print(f"| {scen} | {conns} | {m['rps']:.0f} | {lo:.0f}..{hi:.0f} ({spread:.1f}%) | {ratio} | "
                  f"{fmt_us(m['p50_us'])} | {fmt_us(m['p99_us'])} | {fmt_us(m['max_us'])} | "
                  f"{paired} | {p50r} | {p99r} | {rss} | {hwm} | {cpus} | {foreign} | {calib} | "
                  f"{m['errors']:.0f} | {len(rs)}/{ntot[(layout, scen)]}{failtxt} |")

    print("\nMedians over repetitions. x direct = req/s / req/s of `direct` (wrk straight to backend b1) at the "
          "same concurrency and layout. RSS = VmRSS of the proxy's process tree right after the run. "
          "Ratios compare medians; 'paired' = median over repetitions of (run / peer run of the same "
          "repetition), robust to host-speed drift. 90% interval: of the ratio of medians, by bootstrap "
          "(each side's repetitions resampled 2,000 times); a target inside it is not told apart from the "
          "noise. Runs where other processes used more than FOREIGN_MAX "
          f"({fmax:g}) % CPU, or the hypervisor took more than STEAL_MAX ({smax:g}) % (steal), are left "
          "out when clean runs exist (n = used/total).")
    if details:
        print("\nDetails: foreign = busy cpu time (user+sys+irq+softirq, % of all cpus) not spent by "
              "wrk/backends/proxy during the run; calib = host-speed index (python loop iterations per us, "
              "min of cpu0/cpu1) taken before each run: a drop means the host slowed down; HWM = peak RSS.")


if __name__ == "__main__":
    main()
