"""Chapters 3 and 4's bookkeeping: their two 1-D testbeds, the posterior spread and score
agreement summaries (chapter 3), the early-stopping summaries (chapter 4), their tables, text,
metrics and verdicts."""
from __future__ import annotations

import numpy as np

__all__ = ["OVER", "UNDER", "NR_FLOOR", "OUTPUTS", "spread_testbeds", "extreme", "summarise_spread",
           "spread_result", "spread_table", "spread_text", "spread_metrics", "summarise_stopping",
           "stopping_table", "stopping_findings", "stopping_text", "stopping_metrics"]

OVER, UNDER = 1.25, 0.8          # score norm ratios beyond these count as over- / under-weighting
NR_FLOOR = 1e-3                  # norm ratios below this are drawn at this value
# Chapter 4's two outputs of a stopped sampler.
OUTPUTS = {"particle": "particle $x_{t_\\mathrm{stop}}$", "tweedie": "Tweedie mean $m(x_{t_\\mathrm{stop}})$"}
_EXACT = ("fsr", "exact")


def spread_testbeds(n_atoms: int, seed: int, device="auto"):
    """(gmm, testbeds) of chapters 3 and 4: three atoms measured near the first, and n_atoms atoms
    of a three-mode 1-D mixture (drawn with `seed`) measured between two modes; each testbed a
    dict with "title", "prior" and "lik"."""
    import torch

    from .. import EmpiricalPrior, GaussianLikelihood, forward, testbeds
    if not isinstance(n_atoms, int) or isinstance(n_atoms, bool) or n_atoms < 1:
        raise ValueError(f"n_atoms: expected a positive integer, got {n_atoms!r}")
    gen = torch.Generator().manual_seed(seed)
    gmm = testbeds.GaussianMixture([0.5, 0.2, 0.3], [[-2.0], [0.0], [2.0]], [0.09, 0.09, 0.09])
    return gmm, {
        "three_atoms": {
            "title": "three atoms, y = -1.8, σ = 0.3",
            "prior": EmpiricalPrior(torch.tensor([[-1.8], [0.2], [2.2]], dtype=torch.float64),
                                    labels=torch.arange(3), device=device),
            "lik": GaussianLikelihood(forward.Identity(), [-1.8], 0.3)},
        "gmm_atoms": {
            "title": f"{n_atoms} GMM atoms, y = 1, σ = 0.5",
            "prior": gmm.to_empirical(n_atoms, gen, device=device),
            "lik": GaussianLikelihood(forward.Identity(), [1.0], 0.5)}}


# --------------------------------------------------------------------------------------------
# Chapter 3: the posterior spread.

def extreme(times, values, pick) -> tuple[float, float]:
    """(value, time) of the finite entry of values chosen by `pick` (np.nanargmax, ...); (nan, nan)
    when none is finite."""
    v = np.asarray(values, dtype=float)
    if len(v) != len(times):
        raise ValueError(f"values: expected one value per time ({len(times)}), got {len(v)}")
    if not np.isfinite(v).any():
        return float("nan"), float("nan")
    i = int(pick(np.where(np.isfinite(v), v, np.nan)))
    return float(v[i]), float(times[i])


def summarise_spread(spread: dict, agreement) -> dict:
    """Extremes of a report's variance ratio and, when `agreement` (its score agreement) is given,
    of the score's norm ratio and cosine, with the times of over- and under-weighting."""
    t, vr = spread["times"], spread["var_ratio"]
    s = {"var_ratio_final": float(vr[-1])}
    s["var_ratio_max"], s["t_var_ratio_max"] = extreme(t, vr, np.nanargmax)
    s["var_ratio_min"], s["t_var_ratio_min"] = extreme(t, vr, np.nanargmin)
    _, s["t_var_ratio_worst"] = extreme(t, np.abs(np.log(vr)), np.nanargmax)
    s["var_ratio_worst"] = float(vr[t.index(s["t_var_ratio_worst"])])
    if agreement is not None:
        ts, nr, cs = agreement["times"], np.asarray(agreement["norm_ratio"]), np.asarray(agreement["cosine"])
        s["norm_ratio_max"], s["t_norm_ratio_max"] = extreme(ts, nr, np.nanargmax)
        s["norm_ratio_min"], s["t_norm_ratio_min"] = extreme(ts, nr, np.nanargmin)
        s["cosine_min"], s["t_cosine_min"] = extreme(ts, cs, np.nanargmin)
        s["over_weight_times"] = [t_ for t_, r in zip(ts, nr) if r > OVER]
        s["under_weight_times"] = [t_ for t_, r in zip(ts, nr) if r < UNDER]
        s["no_signal_times"] = [t_ for t_, r in zip(ts, nr) if not np.isfinite(r)]
    return s


def spread_result(report) -> dict:
    """What chapter 3 keeps of one sampler's fsdiag.diagnose report."""
    return {"spread": {k: report.spread[k] for k in ("times", "var_ratio", "mean_error", "wasserstein")},
            "score_agreement": report.score_agreement,
            "summary": summarise_spread(report.spread, report.score_agreement), "mode_mass": report.modes["sampler"]}


def spread_table(results: dict, labels: dict):
    """book.table of each testbed's and sampler's variance- and norm-ratio extremes."""
    from .tables import table
    rows = []
    for res in results.values():
        for name, r in res["methods"].items():
            s = r["summary"]
            rows.append({"testbed": res["title"], "sampler": labels.get(name, name),
                         "variance ratio: min": s["var_ratio_min"], "variance ratio: max": s["var_ratio_max"],
                         "variance ratio at tₘᵢₙ": s["var_ratio_final"],
                         "norm ratio: min": s.get("norm_ratio_min"), "norm ratio: max": s.get("norm_ratio_max"),
                         "cosine: min": s.get("cosine_min")})
    return table(rows)


def _t_range(ts) -> str:
    return f"t = {ts[0]:.3g}" if len(ts) == 1 else f"{len(ts)} of the times between t = {min(ts):.3g} and {max(ts):.3g}"


def spread_text(results: dict, methods, labels: dict) -> str:
    """The page's paragraph per testbed: how each sampler weighs the likelihood and how far its
    cloud's spread is off."""
    lines = []
    for res in results.values():
        ms = res["methods"]
        text = [f"**{res['title']}.**"]
        if "fsr" in ms:
            s, e = ms["fsr"]["summary"], ms["exact"]["summary"]
            text.append(f"The FSR's variance ratio stays between {s['var_ratio_min']:.3f} and "
                        f"{s['var_ratio_max']:.3f} (exact sampler: {e['var_ratio_min']:.3f} to "
                        f"{e['var_ratio_max']:.3f}), and its score is exact: norm ratio "
                        f"{s['norm_ratio_min']:.3f} to {s['norm_ratio_max']:.3f}.")
        for name in [m for m in methods if m != "fsr"]:
            s = ms[name]["summary"]
            parts = []
            if s["over_weight_times"]:
                parts.append(f"over-weights the likelihood at {_t_range(s['over_weight_times'])} "
                             f"(norm ratio up to {s['norm_ratio_max']:.3g} at t = {s['t_norm_ratio_max']:.3g})")
            if s["under_weight_times"]:
                parts.append(f"under-weights {'it' if parts else 'the likelihood'} at "
                             f"{_t_range(s['under_weight_times'])} (norm ratio down to {s['norm_ratio_min']:.3g} "
                             f"at t = {s['t_norm_ratio_min']:.3g})")
            if not parts:
                parts.append(f"weighs the likelihood within [{UNDER}, {OVER}] of the exact score (norm ratio "
                             f"{s['norm_ratio_min']:.3g} to {s['norm_ratio_max']:.3g})")
            kind = "too wide" if s["var_ratio_worst"] > 1 else "too narrow"
            cosine = (f" Its mean cosine drops to {s['cosine_min']:.3f} at t = {s['t_cosine_min']:.3g}."
                      if s["cosine_min"] < 0.99 else "")
            text.append(f"{labels[name]} " + " and ".join(parts) + "." + cosine + " Its cloud is farthest off at "
                        f"t = {s['t_var_ratio_worst']:.3g}, {kind} by a variance ratio of {s['var_ratio_worst']:.3g}, "
                        f"and ends at {s['var_ratio_final']:.3g} at $t_{{\\min}}$.")
        lines.append(" ".join(text))
    return "\n\n".join(lines)


def _spread_factor(r, window=(0.0, np.inf)) -> float:
    # How far the cloud's variance is off, as a factor >= 1 (2 = twice or half the exact variance).
    sp = r["spread"]
    vals = [v for t, v in zip(sp["times"], sp["var_ratio"]) if window[0] <= t <= window[1] and v > 0]
    return max((max(v, 1 / v) for v in vals), default=float("nan"))


def spread_metrics(params: dict, results: dict) -> dict:
    """metrics.json of chapter 3 with its verdict (shown on the page)."""
    from .pages import verdict
    t_mid = (0.05, 0.5)   # intermediate times: the likelihood matters and the particles have not yet chosen an atom
    approx = {key: max((_spread_factor(r, t_mid) for n, r in res["methods"].items() if n not in _EXACT),
                       default=float("nan")) for key, res in results.items()}
    exact = max(_spread_factor(r) for res in results.values() for n, r in res["methods"].items() if n in _EXACT)
    v = verdict(
        "Approximations under- or over-estimate the posterior spread at intermediate times; the FSR, sampled with "
        "its exact score, gets it right.",
        [*[(f"{res['title']}: worst approximation's variance off by a factor, {t_mid[0]:g} ≤ t ≤ {t_mid[1]:g}",
            approx[key], ">", 1.5) for key, res in results.items()],
         ("FSR and exact sampler: variance off by a factor, worst problem and recorded time", exact, "<", 1.25)],
        regime=f"{params['n_particles']} particles: the variance ratio's own Monte Carlo error is about "
               f"{np.sqrt(2 / params['n_particles']):.2f}, well inside the exact samplers' tolerance of 1.25.")
    return {"params": params, "testbeds": results, "verdict": v}


# --------------------------------------------------------------------------------------------
# Chapter 4: early stopping.

def summarise_stopping(es: dict) -> dict:
    """For both outputs of an early_stopping report (W1 per stopping time, times descending to
    t_min): the best stopping time and its W1 against stopping at t_min. Ties (to rounding) go to
    the latest stop, i.e. to running the sampler to the end."""
    t = np.asarray(es["times"])
    s = {}
    for kind in OUTPUTS:
        w = np.asarray(es[kind])
        if w.shape != t.shape:
            raise ValueError(f"es: expected one {kind} W1 per time ({t.shape}), got {w.shape}")
        i = int(np.flatnonzero(w <= w.min() * (1 + 1e-6) + 1e-9).max())
        gain = float(w[-1] - w[i])
        s[kind] = {"final": float(w[-1]), "best": float(w[i]), "t_best": float(t[i]), "at_t_max": float(w[0]),
                   "gain": gain, "relative_gain": gain / max(float(w[-1]), 1e-300),
                   # an earlier stop helps if it beats t_min by more than 5% (and 1e-3 in W1)
                   "earlier_stop_helps": bool(gain > max(0.05 * float(w[-1]), 1e-3)),
                   # fraction of consecutive stopping times at which stopping later does not hurt
                   "monotone_fraction": float(np.mean(np.diff(w) <= 1e-9 + 1e-6 * np.abs(w[:-1])))}
    return s


def stopping_table(results: dict, labels: dict):
    """book.table of each sampler's W1 at t_min and at its best stopping time, both outputs."""
    from .tables import table
    rows = []
    for res in results.values():
        for name, r in res["methods"].items():
            p, w = r["summary"]["particle"], r["summary"]["tweedie"]
            rows.append({"testbed": res["title"], "sampler": labels.get(name, name),
                         "particle W1 at tₘᵢₙ": p["final"], "particle W1, best": p["best"], "best stop t": p["t_best"],
                         "Tweedie W1 at tₘᵢₙ": w["final"], "Tweedie W1, best": w["best"],
                         "best stop t (Tweedie)": w["t_best"]})
    return table(rows)


def stopping_findings(results: dict, methods) -> None:
    """Add to each testbed's results the approximations an earlier stop helps
    ("earlier_stop_helps") and, with the FSR run, those no stop brings within twice its final
    particle W1 ("never_within_twice_fsr")."""
    approx = [m for m in methods if m != "fsr"]
    for res in results.values():
        ms = res["methods"]
        res["earlier_stop_helps"] = [n for n in approx if ms[n]["summary"]["particle"]["earlier_stop_helps"]
                                     or ms[n]["summary"]["tweedie"]["earlier_stop_helps"]]
        if "fsr" in ms:
            floor = ms["fsr"]["summary"]["particle"]["final"]
            res["never_within_twice_fsr"] = [n for n in approx
                                             if min(ms[n]["summary"][k]["best"] for k in OUTPUTS) > 2 * floor]


def _gain_text(label, s) -> str:
    text = f"{label} W1 {s['final']:.3g} at $t_{{\\min}}$"
    return text + (f", but {s['best']:.3g} if stopped at t = {s['t_best']:.3g} ({100 * s['relative_gain']:.0f}% "
                   "better)" if s["earlier_stop_helps"] else ", and no earlier stop does better")


def stopping_text(results: dict, methods, labels: dict) -> str:
    """The page's paragraph per testbed (after stopping_findings)."""
    approx = [m for m in methods if m != "fsr"]
    lines = []
    for res in results.values():
        ms = res["methods"]
        text = [f"**{res['title']}** (posterior standard deviation {res['posterior_std']:.3g})."]
        for ref in (r for r in _EXACT[::-1] if r in ms):
            p, w = ms[ref]["summary"]["particle"], ms[ref]["summary"]["tweedie"]
            text.append(f"The {labels[ref]}'s particle W1 falls from {p['at_t_max']:.3f} at t = 1 to "
                        f"{p['final']:.3g} at $t_{{\\min}}$ (stopping later does not hurt at "
                        f"{100 * p['monotone_fraction']:.0f}% of the steps between recorded times); its Tweedie "
                        f"mean reaches {w['final']:.3g}.")
        for name in approx:
            p, w = ms[name]["summary"]["particle"], ms[name]["summary"]["tweedie"]
            part = f"{labels[name]}: " + _gain_text("particle", p) + "; " + _gain_text("Tweedie mean", w)
            if w["best"] < 0.98 * p["best"]:
                part += ". The Tweedie mean is the better output"
            elif p["best"] < 0.98 * w["best"]:
                part += ". The particle is the better output"
            if "fsr" in ms:
                ratio = p["final"] / max(ms["fsr"]["summary"]["particle"]["final"], 1e-300)
                part += f". At $t_{{\\min}}$ its particle is {ratio:.1f} times as far from the posterior as the FSR's"
            text.append(part + ".")
        helps = res.get("earlier_stop_helps", [])
        text.append("Stopping earlier than $t_{\\min}$ helps " + (", ".join(labels[n] for n in helps) or "no sampler")
                    + ".")
        if res.get("never_within_twice_fsr"):
            floor = ms["fsr"]["summary"]["particle"]["final"]
            text.append("No stopping time and no output brings "
                        + ", ".join(labels[n] for n in res["never_within_twice_fsr"])
                        + f" within twice the FSR's final particle W1 ({2 * floor:.3g}).")
        lines.append(" ".join(text))
    return "\n\n".join(lines)


def _early_gain(ms, names) -> float:
    # Largest relative W1 gain, over samplers and outputs, from stopping before t_min.
    return max((ms[n]["summary"][k]["relative_gain"] for n in names for k in OUTPUTS), default=float("nan"))


def stopping_metrics(params: dict, results: dict) -> dict:
    """metrics.json of chapter 4 with its verdict (shown on the page)."""
    from .pages import verdict
    gains = {key: _early_gain(res["methods"], [n for n in res["methods"] if n not in _EXACT])
             for key, res in results.items()}
    exact_gain = max(_early_gain(res["methods"], [n for n in _EXACT if n in res["methods"]])
                     for res in results.values())
    shows = [res["title"] for key, res in results.items() if gains[key] > 0.05]
    lacks = [res["title"] for key, res in results.items() if not gains[key] > 0.05]
    regime = (f"t_min = {params['t_min']:g}, {params['n_particles']} particles, {params['n_steps']} steps. "
              + (f"The sensitivity shows on {'; '.join(shows)}: stopping early helps an approximation there. "
                 if shows else "")
              + (f"It is not reproduced on {'; '.join(lacks)}: there each approximation is best at t_min, and what "
                 "it gets wrong (e.g. mass on the wrong atoms) no stopping time fixes." if lacks else ""))
    v = verdict(
        "Approximate samplers' output is sensitive to the early-stopping time (some are better stopped before "
        "t_min), while exact samplers are best run to t_min.",
        [*[(f"{res['title']}: largest relative W1 gain of an approximation from stopping early", gains[key], ">",
            0.05) for key, res in results.items()],
         ("FSR and exact sampler: largest relative W1 gain from stopping early, any problem", exact_gain, "<", 0.05)],
        regime=regime)
    return {"params": params, "testbeds": results, "verdict": v}
