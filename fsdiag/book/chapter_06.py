"""Chapter 6's bookkeeping: the ring and manifold problems, the off-support radius, each run's
hallucination rates with intervals, the page's figures' inputs, tables, text, metrics and verdict."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DATASET_NAMES", "OPERATOR_NAMES", "method_names", "off_support_radius", "rates", "ring_prior",
           "ring_table", "ring_particles", "ring_text", "manifold", "operator", "manifold_problem",
           "manifold_tables", "manifold_rows", "sweep_title", "noise_stressor_table", "hallucination_text",
           "hallucination_metrics"]

# Readable names of the manifolds and operators on the page (metrics.json keeps the keys).
DATASET_NAMES = {"swiss_roll": "Swiss roll", "torus": "torus", "sphere": "sphere"}
OPERATOR_NAMES = {"radial": "radial (norm of x)", "polar_angle": "polar angle", "mlp": "random MLP"}


def method_names(zeta: float) -> dict:
    """{method key: name on the page}, ζ-DPS with its weight."""
    return {"fsr": "FSR", "sigma_dps": "σ-DPS", "zeta_dps": f"ζ-DPS (ζ={zeta:g})", "pigdm": "ΠGDM", "tmpd": "TMPD"}


def off_support_radius(d: int, *, n_steps: int, t_min: float) -> float:
    """The off-support radius b (sqrt(d) + 3) of fsdiag.diagnose, b widened to the standard
    deviation of the last Euler-Maruyama step's noise when that exceeds b = sqrt(1 - abar(t_min))
    on a coarse grid, so that an exact sampler is (almost) never flagged."""
    from .. import VPSchedule
    if not isinstance(d, int) or d < 1:
        raise ValueError(f"d: expected a positive dimension, got {d!r}")
    schedule = VPSchedule()
    grid = schedule.time_grid(n_steps, t_min)
    step_std = math.sqrt(max(1 - schedule.alpha_bar(t_min), schedule.beta(float(grid[-2])) * float(grid[-2] - grid[-1])))
    return step_std * (math.sqrt(d) + 3)


def rates(rep, n_particles: int) -> dict:
    """A report's hallucination rates, mode TV and W1, with Wilson 95% intervals of the prior-mode
    and off-support rates over n_particles."""
    from ..diagnostics import wilson_interval
    h = rep.hallucination
    out = {"prior_mode": h["prior_mode"], "off_support": h["off_support"], "likelihood_mode": h["likelihood_mode"],
           "tv_modes": rep.modes["tv"], "wasserstein": rep.wasserstein}
    for key in ("prior_mode", "off_support"):
        lo, hi = wilson_interval(round(out[key] * n_particles), n_particles)
        out[key + "_ci"] = [float(lo), float(hi)]
    return out


def ring_prior(n_modes: int, radius: float, std: float, n_atoms: int, seed: int, device="auto"):
    """n_atoms atoms (drawn with `seed`) of n_modes equal Gaussian modes evenly spaced on a circle."""
    import torch

    from .. import testbeds
    if not isinstance(n_modes, int) or n_modes < 2:
        raise ValueError(f"n_modes: expected an integer >= 2, got {n_modes!r}")
    angles = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
    ring = testbeds.GaussianMixture(torch.ones(n_modes), radius * torch.stack([angles.cos(), angles.sin()], 1),
                                    torch.full((n_modes,), std ** 2))
    return ring.to_empirical(n_atoms, torch.Generator().manual_seed(seed), device=device)


def ring_table(ring_runs: dict, n_particles: int):
    """DataFrame, one row per (noise, method) of ring_runs {(sigma, method): (run, report, lik)}:
    the rates, the modes the posterior excludes and its mass on them."""
    import pandas as pd
    rows = []
    for (sigma, name), (_, rep, _) in ring_runs.items():
        absent = rep.hallucination["absent_modes"]
        rows.append({"noise_std": float(sigma), "method": name, **rates(rep, n_particles), "absent_modes": absent,
                     "exact_absent_mass": float(sum(e for lab, e in zip(rep.modes["labels"], rep.modes["exact"])
                                                    if lab in absent))})
    return pd.DataFrame(rows)


def ring_particles(prior, ring_runs: dict, sigma: float, names: dict, colors: dict, abar_min: float) -> dict:
    """plots.particles_figure's samples, flagged (nearest atom in a mode the posterior excludes)
    and colors at noise sigma, titled by method and hallucination rate."""
    absent = ring_runs[(sigma, "fsr")][1].hallucination["absent_modes"]
    labels = prior.labels.cpu().numpy()
    out = {"samples": {}, "flagged": {}, "colors": {}}
    for (s, name), (run, rep, _) in ring_runs.items():
        if s != sigma:
            continue
        title = f"{names[name]}\n{rep.hallucination['prior_mode']:.1%} hallucinated"
        out["samples"][title] = run.samples.cpu().numpy()
        out["flagged"][title] = np.isin(labels[prior.nearest_atoms(run.samples, abar_min).cpu().numpy()], absent)
        out["colors"][title] = colors[name]
    return out


def ring_text(table, names: dict) -> str:
    """The page's sentence on the ring: the exact mass, the FSR's and the worst method's."""
    worst = table.loc[table.prior_mode.idxmax()]
    fsr = table[table.method == "fsr"].prior_mode.max()
    return (f"The exact posterior puts at most {table.exact_absent_mass.max():.1e} on the excluded modes. The FSR "
            f"sampler puts at most **{fsr:.3f}** of its particles there; the worst method, "
            f"{names[worst.method]} at σ = {worst.noise_std:g}, puts **{worst.prior_mode:.3f}** "
            f"(95% interval [{worst.prior_mode_ci[0]:.3f}, {worst.prior_mode_ci[1]:.3f}]).")


def manifold(name: str, n: int, gen, n_segments: int):
    """(points, labels): n points of a manifold testbed and a segment label (of n_segments) from
    their intrinsic coordinate."""
    import torch

    from .. import testbeds
    if name == "swiss_roll":
        x, s = testbeds.swiss_roll(n, gen)
        coord = (s - math.pi) / (3 * math.pi)                  # s in [pi, 4 pi] -> [0, 1]
    elif name == "torus":
        x, ang = testbeds.torus(n, gen)
        coord = ang[:, 0] / (2 * math.pi)
    elif name == "sphere":
        x = testbeds.sphere(n, gen, dim=3)
        coord = (torch.atan2(x[:, 1], x[:, 0]) + math.pi) / (2 * math.pi)
    else:
        raise ValueError(f"name: expected one of {list(DATASET_NAMES)}, got {name!r}")
    return x, (coord * n_segments).long().clamp(0, n_segments - 1)


def operator(name: str, d: int, *, mlp_hidden: int, seed: int):
    """The nonlinear forward model `name` on R^d."""
    from .. import forward
    if name not in OPERATOR_NAMES:
        raise ValueError(f"name: expected one of {list(OPERATOR_NAMES)}, got {name!r}")
    return {"radial": forward.Radial, "polar_angle": forward.PolarAngle,
            "mlp": lambda: forward.MLP(d, 1, mlp_hidden, seed=seed)}[name]()


def manifold_problem(dataset: str, op_name: str, sigma: float, *, n_atoms: int, n_segments: int, mlp_hidden: int,
                     seed: int, device="auto"):
    """(prior, lik, x_star): n_atoms labelled atoms of the manifold, a held-out point x_star and
    its measurement through the operator with noise sigma (seeds seed, seed + 1, seed + 2)."""
    import torch

    from .. import EmpiricalPrior, GaussianLikelihood
    atoms, labels = manifold(dataset, n_atoms, torch.Generator().manual_seed(seed), n_segments)
    x_star, _ = manifold(dataset, 1, torch.Generator().manual_seed(seed + 1), n_segments)
    op = operator(op_name, atoms.shape[1], mlp_hidden=mlp_hidden, seed=seed)
    z = torch.randn(1, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    lik = GaussianLikelihood(op, op(x_star)[0] + sigma * z, sigma)
    return EmpiricalPrior(atoms, labels=labels, device=device), lik, x_star


def _rate_frame(manifold_rates: dict, key: str, names: dict):
    import pandas as pd
    rows = {(DATASET_NAMES.get(d, d), OPERATOR_NAMES.get(o, o)):
            {names[m]: (np.nan if r is None else r[key]) for m, r in by_m.items()}
            for d, by_o in manifold_rates.items() for o, by_m in by_o.items()}
    return pd.DataFrame(rows).T.rename_axis(["dataset", "operator"])


def manifold_tables(manifold_rates: dict, names: dict) -> tuple[list, str]:
    """([(heading, book.table)] of the off-support, likelihood-mode and prior-mode rates per
    manifold and operator, a note naming the methods that apply to none of them ("" if none))."""
    from .tables import table
    tables = [(f"**{key.replace('_', '-')} rate**", table(_rate_frame(manifold_rates, key, names).dropna(axis=1, how="all")))
              for key in ("off_support", "likelihood_mode", "prior_mode")]
    off = _rate_frame(manifold_rates, "off_support", names)
    absent = [c for c in off if off[c].isna().all()]
    note = (f"{' and '.join(absent)} {'have' if len(absent) > 1 else 'has'} no column: "
            f"{'they need' if len(absent) > 1 else 'it needs'} a linear forward model, "
            "and none of these operators is linear.") if absent else ""
    return tables, note


def manifold_rows(manifold_runs: dict, dataset: str, shown, names: dict, abar_min: float, radius: float) -> list:
    """plots.manifold_samples_figure's rows for `dataset`, one per operator: atoms, FSR weights,
    held-out point, level set, and the `shown` methods' samples flagged when farther than radius
    from every atom scaled by sqrt(abar_min)."""
    from .. import posterior_weights
    rows = []
    for (d, op_name, name), (_, _, prior, lik, x_star) in manifold_runs.items():
        if d != dataset or name != "fsr":
            continue
        samples, flagged = {}, {}
        for m in shown:
            x = manifold_runs[(dataset, op_name, m)][0].samples
            dist = (x[:, None, :] - math.sqrt(abar_min) * prior.atoms[None]).norm(dim=2).min(1).values
            flagged[names[m]] = (dist > radius).cpu().numpy()
            samples[names[m]] = x.cpu().numpy()
        rows.append({"label": OPERATOR_NAMES.get(op_name, op_name), "atoms": prior.atoms.cpu().numpy(),
                     "psi": posterior_weights(prior, lik).cpu().numpy(), "x_star": x_star.cpu().numpy(),
                     "forward": lik.forward, "y": float(lik.y[0]), "samples": samples, "flagged": flagged})
    return rows


def sweep_title(dataset: str, op_name: str) -> str:
    """The noise stressor's title, with readable names."""
    return f"{DATASET_NAMES.get(dataset, dataset)}, {OPERATOR_NAMES.get(op_name, op_name)}: hallucination as the noise falls"


def noise_stressor_table(noise_table, names: dict):
    """book.table of the sweep's off-support and likelihood-mode rates per noise and method."""
    from .tables import table
    return table(noise_table.pivot_table(index="noise_std", columns="method", values=["off_support", "likelihood_mode"]),
                 names={**names, "noise_std": "noise σ", "off_support": "off-support",
                        "likelihood_mode": "likelihood-mode"})


def _nonlinear(manifold_rates):
    return [(d, o, m, r) for d, by_o in manifold_rates.items() for o, by_m in by_o.items()
            for m, r in by_m.items() if r is not None]


def _summary(manifold_rates, noise_table):
    nonlinear = _nonlinear(manifold_rates)
    fsr_off = max(r["off_support"] for d, o, m, r in nonlinear if m == "fsr")
    fsr_off = max(fsr_off, noise_table[noise_table.method == "fsr"].off_support.max())
    mean = {m: float(np.mean([r["off_support"] for d, o, mm, r in nonlinear if mm == m]))
            for m in ("fsr", "sigma_dps", "zeta_dps")}
    na = sorted({m for by_o in manifold_rates.values() for by_m in by_o.values() for m, r in by_m.items() if r is None})
    return nonlinear, fsr_off, mean, na


def hallucination_text(manifold_rates: dict, noise_table, names: dict, *, manifold_noise: float, sweep_dataset: str,
                       sweep_operator: str) -> str:
    """The page's summary of the manifolds and the noise sweep."""
    nonlinear, fsr_off, mean, na = _summary(manifold_rates, noise_table)
    worst = max((r["off_support"], d, o, m) for d, o, m, r in nonlinear if m != "fsr")
    low = min(noise_table.noise_std)
    at_low = noise_table[noise_table.noise_std == low].set_index("method").off_support.items()
    return (f"Across the {len(nonlinear) // 3} nonlinear problems and the noise sweep, the FSR sampler's off-support "
            f"rate is at most **{fsr_off:.3f}**. Mean off-support rate over the problems at σ = {manifold_noise:g}: "
            + ", ".join(f"{names[m]} {v:.3f}" for m, v in mean.items())
            + f"; the worst case is {names[worst[3]]} on {DATASET_NAMES[worst[1]]} / {OPERATOR_NAMES[worst[2]]} with "
            f"**{worst[0]:.3f}** of its particles off the manifold. At σ = {low:g} on "
            f"{DATASET_NAMES[sweep_dataset]} / {OPERATOR_NAMES[sweep_operator]}: "
            + ", ".join(f"{names[m]} {v:.3f}" for m, v in at_low)
            + f". Not applicable to nonlinear models: {', '.join(names[m] for m in na)}.")


def hallucination_metrics(config: dict, ring: dict, manifold: dict, sweep: dict, names: dict) -> dict:
    """metrics.json of chapter 6 with its verdict (shown on the page). config: seed, n_atoms,
    n_particles, n_steps, t_min, zeta and the radii; ring: y, table, ring_modes, ring_noise;
    manifold: noise_std, rates; sweep: dataset, operator, table, noise_sweep."""
    from .pages import verdict
    ring_t, noise_t = ring["table"], sweep["table"]
    nonlinear, fsr_off, mean, na = _summary(manifold["rates"], noise_t)
    fsr_ring = ring_t[ring_t.method == "fsr"].prior_mode.max()
    metrics = {
        "config": config,
        "ring": {"y": ring["y"], "rows": ring_t.to_dict(orient="records")},
        "manifold": {"noise_std": manifold["noise_std"], "rates": manifold["rates"], "not_applicable": na},
        "noise_sweep": {"dataset": sweep["dataset"], "operator": sweep["operator"],
                        "rows": noise_t.to_dict(orient="records")},
        "summary": {"fsr_max_off_support": float(fsr_off), "mean_off_support": mean,
                    "fsr_max_prior_mode": float(fsr_ring),
                    "max_prior_mode": {m: float(ring_t[ring_t.method == m].prior_mode.max()) for m in names}}}
    approx_ring = ring_t[ring_t.method != "fsr"].sort_values("prior_mode").iloc[-1]
    off_rows = [(r["off_support"], f"{d} / {o}, σ = {manifold['noise_std']:g}", m)
                for d, o, m, r in nonlinear if m != "fsr"]
    off_rows += [(float(r.off_support), f"{sweep['dataset']} / {sweep['operator']}, σ = {r.noise_std:g}", r.method)
                 for r in noise_t[noise_t.method != "fsr"].itertuples()]
    off_worst = max(off_rows)
    metrics["verdict"] = verdict(
        "The approximations hallucinate prior modes that the posterior excludes and, under nonlinear operators and "
        "low noise, likelihood modes off the data; the FSR sampler puts (almost) nothing there.",
        [(f"ring: largest mass an approximation puts on excluded modes ({names[approx_ring.method]}, "
          f"σ = {approx_ring.noise_std:g})", float(approx_ring.prior_mode), ">", 0.05),
         ("ring: FSR's largest mass on excluded modes", float(fsr_ring), "<=", 0.02),
         (f"manifolds: largest off-support rate of a DPS variant ({names[off_worst[2]]}, {off_worst[1]})",
          off_worst[0], ">", 0.2),
         ("manifolds: FSR's largest off-support rate", float(fsr_off), "<=", 0.02)],
        regime=f"Ring of {ring['ring_modes']} modes observed through x₁ (σ ∈ {list(ring['ring_noise'])}); Swiss roll, "
               f"torus and sphere under nonlinear operators (σ = {manifold['noise_std']:g}, sweep σ ∈ "
               f"{list(sweep['noise_sweep'])}); {config['n_particles']} particles.")
    return metrics
