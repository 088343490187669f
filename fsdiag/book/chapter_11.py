"""Chapter 11's bookkeeping: one row per (convention, discretisation, step count) run, the tables
of the side-by-side comparison, where each failure persists or depends on a choice, the page's
text, metrics and verdict."""
from __future__ import annotations

__all__ = ["HALLUCINATION", "TV_MARGIN", "run_row", "comparison_tables", "pick", "findings_of", "findings_text",
           "conventions_metrics"]

HALLUCINATION, TV_MARGIN = 0.005, 0.02   # a run hallucinates / gets mode weights wrong beyond these
_VP = "VP-SDE Euler–Maruyama"


def run_row(report, *, y: float, family: str, convention: str, schedule: str, n_steps: int, n_particles: int) -> dict:
    """One run's row: its mass per atom, TV with the floor, excluded mass with a Wilson 95% interval."""
    from ..diagnostics import wilson_interval
    lo, hi = wilson_interval(round(report.excluded_mass * n_particles), n_particles)
    return {"y": y, "family": family, "convention": convention, "schedule": schedule, "n_steps": n_steps,
            "atom_mass": report.atom_mass, "tv": report.tv_atoms, "excluded_mass": report.excluded_mass,
            "excluded_lower": float(lo), "excluded_upper": float(hi), "tv_floor": report.tv_floor_atoms}


def _pct_ci(p, n):
    from .analysis import with_ci
    p, lo, hi = with_ci(p, n)
    return f"{100 * p:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]"


def comparison_tables(results: list, exact: dict, atoms, *, n_steps: int, n_particles: int) -> list:
    """[(markdown heading, book.table)] per observation: the exact posterior and floor, then each
    run at n_steps with its masses (95% intervals), excluded mass and TV."""
    from .tables import table
    out = []
    for y, e in exact.items():
        head = (f"**y = {y:g}**: exact posterior " + ", ".join(f"{a}: {100 * p:.2f}%" for a, p in zip(atoms, e["posterior"]))
                + f"; Monte Carlo floor of the TV with {n_particles} draws {e['floor']['mean']:.4f} (95% quantile "
                f"{e['floor']['q95']:.4f}); the exact sampler's TV {e['tv']:.4f}.")
        rows = [{"method": r["family"], "convention": r["convention"], "discretisation": r["schedule"],
                 **{f"mass on {a}": _pct_ci(p, n_particles) for a, p in zip(atoms, r["atom_mass"])},
                 "excluded": f"{100 * r['excluded_mass']:.2f}%", "TV": r["tv"]}
                for r in results if r["y"] == y and r["n_steps"] == n_steps]
        out.append((head, table(rows)))
    return out


def pick(results: list, conventions, y, family, convention=None, schedule=_VP, n=None, *, n_steps: int) -> dict:
    """The run of `family` under `convention` (default: the family's first, the paper's), `schedule`
    and n steps (default n_steps) at observation y."""
    convention = convention or next(c for f, c in conventions if f == family)
    for r in results:
        if (r["y"] == y and (r["family"], r["convention"]) == (family, convention) and r["schedule"] == schedule
                and r["n_steps"] == (n or n_steps)):
            return r
    raise ValueError(f"results: no run of {family}, {convention}, {schedule}, {n or n_steps} steps at y = {y}")


def _fails(r, kind, exact):
    if kind == "hallucination":
        return r["excluded_lower"] > HALLUCINATION, r["excluded_mass"]
    return r["tv"] > exact[r["y"]]["floor"]["q95"] + TV_MARGIN, r["tv"]


def findings_of(results: list, exact: dict, conventions, schedules, counts, *, n_steps: int) -> list:
    """For each observation, family and failure (hallucination; mode weights when two atoms are
    supported), along each axis (convention; discretisation and step count under each convention):
    whether it persists, is absent or depends on the choice, with the values."""
    findings = []
    for y in exact:
        kinds = ["hallucination"] + (["mode weights"] if sum(p > 1e-3 for p in exact[y]["posterior"]) > 1 else [])
        for family in dict.fromkeys(f for f, _ in conventions):
            convs = [c for f, c in conventions if f == family]
            get = lambda c, **kw: pick(results, conventions, y, family, c, n_steps=n_steps, **kw)  # noqa: E731
            axes = {("convention", "the paper's choices"): {c: get(c) for c in convs}}
            for c in convs:
                axes[("discretisation", c)] = {s: get(c, schedule=s) for s in schedules}
                axes[("step count", c)] = {f"{n} steps": get(c, n=n) for n in counts}
            for kind in kinds:
                for (axis, under), runs in axes.items():
                    verdicts = {label: _fails(r, kind, exact) for label, r in runs.items()}
                    n_fail = sum(f for f, _ in verdicts.values())
                    status = "persists" if n_fail == len(verdicts) else "absent" if n_fail == 0 else "depends"
                    findings.append({"y": y, "family": family, "kind": kind, "axis": axis, "under": under,
                                     "status": status, "values": {k: v for k, (_, v) in verdicts.items()},
                                     "failing": {k: f for k, (f, _) in verdicts.items()}})
    return findings


def _groups(findings):
    groups = {}
    for f in findings:
        groups.setdefault((f["y"], f["family"], f["kind"]), []).append(f)
    depends = [f"{fam} {kind} at y = {y:g} (along the "
               f"{', '.join(dict.fromkeys(g['axis'] for g in fs if g['status'] == 'depends'))})"
               for (y, fam, kind), fs in groups.items() if any(g["status"] == "depends" for g in fs)]
    robust = [f"{fam} {kind} at y = {y:g}" for (y, fam, kind), fs in groups.items()
              if all(g["status"] == "persists" for g in fs)]
    absent = [f"{fam} {kind} at y = {y:g}" for (y, fam, kind), fs in groups.items()
              if all(g["status"] == "absent" for g in fs)]
    return depends, robust, absent


def findings_text(findings: list) -> str:
    """The page's summary of what depends on a convention, and the table of every finding."""
    def fmt(kind, v):
        return f"{100 * v:.2f}%" if kind == "hallucination" else f"{v:.3f}"
    status = {"depends": "**depends on it**", "persists": "persists", "absent": "absent"}
    table = ("| y | method | failure | along | held at | status | values (failing ones in bold) |\n"
             "|---|---|---|---|---|---|---|\n")
    for f in findings:
        vals = "; ".join(f"**{k}: {fmt(f['kind'], v)}**" if f["failing"][k] else f"{k}: {fmt(f['kind'], v)}"
                         for k, v in f["values"].items())
        table += (f"| {f['y']:g} | {f['family']} | {f['kind']} | {f['axis']} | {f['under']} | {status[f['status']]} "
                  f"| {vals} |\n")
    depends, robust, absent = _groups(findings)
    return ("**Depend on a convention**: " + ("; ".join(depends) or "none") + ". **Persist under every "
            "convention, discretisation and step count tried**: " + ("; ".join(robust) or "none")
            + ". **Absent under every choice**: " + ("; ".join(absent) or "none") + ".\n\n" + table)


def conventions_metrics(params: dict, exact: dict, results: list, findings: list, conventions, counts) -> dict:
    """metrics.json of chapter 11 with its verdict (shown on the page)."""
    from .pages import verdict
    depends, robust, _ = _groups(findings)
    observations, n_steps = params["observations"], params["n_steps"]
    metrics = {"params": params, "exact": {str(y): v for y, v in exact.items()}, "results": results,
               "findings": findings, "depends_on_convention": depends, "persists_under_every_convention": robust,
               "thresholds": {"hallucination": HALLUCINATION, "tv_margin": TV_MARGIN}}
    y0 = observations[0]

    def get(y, family, convention=None, **kw):
        return pick(results, conventions, y, family, convention, n_steps=n_steps, **kw)
    pig = [c for f, c in conventions if f == "ΠGDM"]
    evidence = [
        (f"ΠGDM, {pig[0]}: mass on excluded atoms (y = {y0:g})", get(y0, "ΠGDM")["excluded_mass"], ">", 0.03),
        (f"ΠGDM, {pig[1]}: mass on excluded atoms (y = {y0:g})", get(y0, "ΠGDM", pig[1])["excluded_mass"], "<", 0.005),
        (f"ΠGDM, {pig[0]}, DDPM ancestral: mass on excluded atoms",
         get(y0, "ΠGDM", schedule="DDPM ancestral")["excluded_mass"], ">", 0.03),
        (f"ΠGDM, {pig[0]}: smallest mass on excluded atoms over {counts} steps",
         min(get(y0, "ΠGDM", n=n)["excluded_mass"] for n in counts), ">", 0.03)]
    multi = [y for y in observations if sum(p > 1e-3 for p in exact[y]["posterior"]) > 1]
    if multi:
        tvs = [get(multi[0], "DPS", c)["tv"] for f, c in conventions if f == "DPS"]
        evidence.append((f"DPS: largest / smallest TV over its scalings (y = {multi[0]:g})",
                         max(tvs) / max(min(tvs), 1e-12), ">", 1.5))
    metrics["verdict"] = verdict(
        "The failure's size depends on the convention: on the three-atom testbed ΠGDM's hallucinated prior modes "
        "come from the paper code's r_t² and vanish under Song et al.'s, while the discretisation and the step "
        "count leave them in place; DPS's mode-weight error changes size with its scaling.",
        evidence,
        regime=f"Three atoms, noise {params['noise_std']:g}, y = {', '.join(f'{y:g}' for y in observations)}; "
               f"{params['n_particles']} particles; {n_steps} steps for the side-by-side comparison, {counts} in the "
               "sweep." + ("" if multi else " No observation has two supported atoms, so the DPS row is not checked."))
    return metrics
