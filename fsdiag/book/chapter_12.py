"""Chapter 12's bookkeeping (whose error: the likelihood approximation's or the network's): the
training and prior-sample lines, each run's record, the share of the error per method, the page's
table, text, metrics and verdict."""
from __future__ import annotations

import numpy as np

__all__ = ["method_names", "network_settings", "training_line", "prior_lines", "run_record", "share_row", "share_summary", "share_table",
           "add_findings", "whose_text", "whose_metrics"]


def method_names(zeta: float) -> dict:
    """{method key: name on the page}, ζ-DPS with its weight."""
    return {"fsr": "FSR (exact)", "sigma_dps": "σ-DPS", "zeta_dps": f"ζ-DPS (ζ={zeta:g})", "pigdm": "ΠGDM",
            "tmpd": "TMPD"}


def training_line(key: str, tr) -> str:
    """One line on a trained (or loaded) network: time, file and final loss."""
    done = "trained in %.1f s" % tr.seconds if tr.trained else "loaded"
    return (f"{key}: {done} ({tr.path.name}), final loss "
            f"{tr.losses[-1] if tr.losses else float('nan'):.3f}")


def prior_lines(key: str, reports: dict) -> str:
    """One line per denoiser on its unconditional samples: TV over modes to the prior and distance
    to the nearest atom (reports: {name: networks.prior_report})."""
    return "\n".join(f"{key:18} {name:15} TV over modes to the prior {r['tv_modes']:.3f} (floor "
                     f"{r['tv_floor_modes']:.3f}); median distance to the nearest atom {r['relative_distance']:.2f} "
                     "× the atom spacing" for name, r in reports.items() if name != "samples")


def run_record(rep) -> dict:
    """What the chapter keeps of one fsdiag.evaluate report."""
    return {"tv_modes": rep.tv_modes, "floor": rep.tv_floor_modes, "excluded_mass": rep.excluded_mass,
            "mass": rep.modes["sampler"], "exact": rep.modes["exact"]}


def share_row(r: dict) -> dict:
    """The likelihood approximation's share of the total error: TV with the exact denoiser over TV
    with the network, raw and with the Monte Carlo floor subtracted from both (None where the total
    is within 2 floors)."""
    if not {"exact denoiser", "network"} <= set(r):
        raise ValueError(f"r: expected runs with the exact denoiser and the network, got {sorted(r)}")
    e, t, f = r["exact denoiser"]["tv_modes"], r["network"]["tv_modes"], r["network"]["floor"]
    return {"tv_exact_denoiser": e, "tv_network": t, "floor": f, "share": e / max(t, 1e-12),
            "share_above_floor": (max(e - f, 0.0) / (t - f)) if t > 2 * f else None,
            "excluded_exact_denoiser": r["exact denoiser"]["excluded_mass"],
            "excluded_network": r["network"]["excluded_mass"]}


def share_summary(results: dict, prior_reports: dict, titles: dict) -> dict:
    """{problem: title, the FSR's TV, the network prior's TV and floor, each method's share row}."""
    return {key: {"title": titles[key], "fsr_tv": res["fsr"]["exact denoiser"]["tv_modes"],
                  "prior_tv_network": prior_reports[key]["network"]["tv_modes"],
                  "prior_floor": prior_reports[key]["network"]["tv_floor_modes"],
                  "methods": {m: share_row(r) for m, r in res.items() if m != "fsr"}} for key, res in results.items()}


def share_table(summary: dict, names: dict):
    """book.table of every method's share row."""
    import pandas as pd

    from .tables import table
    frame = pd.DataFrame([{"problem": key, "method": names[m], **row} for key, s in summary.items()
                          for m, row in s["methods"].items()])
    return table(frame, names={"tv_exact_denoiser": "TV, exact denoiser", "tv_network": "TV, network",
                               "excluded_exact_denoiser": "excluded, exact denoiser",
                               "excluded_network": "excluded, network"})


def add_findings(summary: dict) -> None:
    """Add to each problem the median share, the methods the network adds most of the error to
    (share < 0.5) and those whose two errors partly cancel (share > 1)."""
    for s in summary.values():
        ms = s["methods"]
        s["median_share"] = float(np.median([r["share"] for r in ms.values()]))
        s["network_adds"] = [m for m, r in ms.items() if r["share"] < 0.5]
        s["errors_cancel"] = [m for m, r in ms.items() if r["share"] > 1.0]


def whose_text(summary: dict, prior_reports: dict, names: dict) -> str:
    """The page's paragraphs per problem (after add_findings)."""
    lines = []
    for key, s in summary.items():
        ms, pr = s["methods"], prior_reports[key]
        lines.append(
            f"**{key}.** The network's unconditional samples are {s['prior_tv_network']:.3f} in TV over modes from "
            f"the prior (floor {s['prior_floor']:.3f}); the exact FSR sampler is {s['fsr_tv']:.3f} from the posterior. "
            + "; ".join(f"{names[m]}: {r['tv_exact_denoiser']:.3f} with the exact denoiser, {r['tv_network']:.3f} "
                        f"with the network (floor {r['floor']:.3f}), so the likelihood approximation alone accounts "
                        f"for {100 * r['share']:.0f}% of the total" for m, r in ms.items())
            + f". Median share over methods: **{100 * s['median_share']:.0f}%**.")
        lines.append(
            f"The network's unconditional samples lie a median {pr['network']['relative_distance']:.2f} atom spacings "
            f"from their nearest atom ({pr['exact denoiser']['relative_distance']:.2f} with the exact denoiser): it "
            "generalises between the atoms that the exact denoiser memorises. "
            + (f"The network adds most of the error for {', '.join(names[m] for m in s['network_adds'])}. "
               if s["network_adds"] else "For no method does the network add most of the error. ")
            + (f"With {', '.join(names[m] for m in s['errors_cancel'])} the network sampler is *closer* to the "
               "posterior than the exact-denoiser one: the two errors partly cancel." if s["errors_cancel"] else ""))
    return "\n\n".join(lines)


def whose_metrics(params: dict, nets: dict, prior_reports: dict, summary: dict, results: dict, names: dict) -> dict:
    """metrics.json of chapter 12 with its verdict (shown on the page)."""
    from .pages import verdict
    metrics = {"params": params,
               "training": {k: {"trained": tr.trained, "seconds": tr.seconds, "key": tr.key,
                                "final_loss": tr.losses[-1] if tr.losses else None} for k, tr in nets.items()},
               "prior": {k: {n: {x: v for x, v in r.items() if x != "modes"} for n, r in rep.items() if n != "samples"}
                         for k, rep in prior_reports.items()},
               "problems": summary, "runs": results}
    rows = [(k, m, r) for k, s in summary.items() for m, r in s["methods"].items()]
    failing = [(k, m, r) for k, m, r in rows if r["tv_exact_denoiser"] > 2 * r["floor"] + 0.05]
    near_exact = [(k, m, r) for k, m, r in rows if r["tv_exact_denoiser"] <= 2 * r["floor"] + 0.05]

    def listed(group):
        return "; ".join(f"{k} {names[m]} (share {r['share']:.2f})" for k, m, r in group) or "none"
    metrics["verdict"] = verdict(
        "A trained network does not rescue a failing likelihood approximation: where a method is far from the exact "
        "posterior with the exact denoiser, it stays far with the network and accounts for most of the error; where "
        "it is nearly exact, the network's own error dominates. The networks alone reproduce the prior's mode weights.",
        [*[(f"{k}: network's unconditional TV over modes to the prior, vs 2 × floor + 0.05", s["prior_tv_network"],
            "<", 2 * s["prior_floor"] + 0.05) for k, s in summary.items()],
         ("failing approximations (TV with the exact denoiser > 2 × floor + 0.05): smallest share TV(exact denoiser) / "
          "TV(network)", min((r["share"] for *_, r in failing), default=float("nan")), ">", 0.5),
         ("nearly exact approximations (TV with the exact denoiser <= 2 × floor + 0.05): median share",
          float(np.median([r["share"] for *_, r in near_exact])) if near_exact else float("nan"), "<", 0.5)],
        regime=f"{params['n_particles']} particles on the 2-D mixture, {params['n_digit_particles']} on the digits; "
               f"MLP {params['mlp_steps']} training steps, convolutional net {params['conv_steps']}. Failing: "
               f"{listed(failing)}. Nearly exact: {listed(near_exact)}.")
    return metrics


def network_settings(*, mlp, conv) -> dict:
    """networks.train_denoiser's architecture per problem: mlp = (width, depth, steps) for the 2-D
    mixture, conv = (channels, residual blocks, steps) for the 8x8 digits."""
    if len(mlp) != 3 or len(conv) != 3:
        raise ValueError(f"mlp: expected (width, depth, steps) and conv (channels, depth, steps), got {mlp!r}, {conv!r}")
    return {"gmm2d": dict(arch="mlp", width=mlp[0], depth=mlp[1], steps=mlp[2]),
            "digits_inpainting": dict(arch="conv", image_shape=(1, 8, 8), width=conv[0], depth=conv[1], steps=conv[2])}
