"""Chapter 7's figures (the minimal cause of hallucination): mass per atom, final histograms,
spread over time, the control's histograms and the multimodal prior against the control. Each
takes the chapter's per-method results (dicts of numbers) and returns a figure."""
from __future__ import annotations

import numpy as np

__all__ = ["atom_mass_figure", "final_histograms_figure", "spread_over_time_figure", "control_histograms_figure",
           "multimodal_vs_control_figure"]


def _check_order(order, results, name="results"):
    missing = [n for n in order if n not in results]
    if missing:
        raise ValueError(f"{name}: no entry for {missing}")


def atom_mass_figure(results: dict, atoms, exact, keep, *, names: dict, colors: dict):
    """Two panels of bars, one group per atom: each method's mass (results[name]: "mass", "lower",
    "upper") with 95% intervals and the exact posterior's (black); the lower panel zooms on the
    atoms outside `keep` (bools, the posterior's support)."""
    import matplotlib.pyplot as plt
    order = list(names)
    _check_order(order, results)
    if len(exact) != len(atoms) or len(keep) != len(atoms):
        raise ValueError(f"exact: expected one mass per atom ({len(atoms)}), got {len(exact)} and keep {len(keep)}")
    fig, axes = plt.subplots(2, 1, figsize=(8.4, 6.6), layout="constrained")
    width = 0.8 / (len(order) + 1)
    xs = np.arange(len(atoms))
    for ax in axes:
        for j, name in enumerate(order):
            m = results[name]
            mass, lo, hi = map(np.asarray, (m["mass"], m["lower"], m["upper"]))
            ax.bar(xs + (j - len(order) / 2) * width, mass, width, color=colors[name], label=names[name],
                   yerr=np.vstack([mass - lo, hi - mass]), capsize=2, error_kw={"lw": 0.8})
        ax.bar(xs + (len(order) / 2) * width, np.asarray(exact, dtype=float), width, color="black",
               label="exact posterior")
        ax.set_xticks(xs, [f"{a:+.1f}" for a in atoms])
        ax.set(xlabel="atom", ylabel="fraction of particles")
    axes[0].set_title("mass per atom (95% Wilson intervals)")
    top = max((results[n]["upper"][i] for n in order for i in range(len(atoms)) if not keep[i]), default=0.0)
    axes[1].set_ylim(0, 1.15 * top + 1e-3)
    axes[1].set_title("zoom on the atoms without posterior mass")
    axes[0].legend(fontsize=9, loc="upper right")
    return fig


def final_histograms_figure(samples: dict, atoms, *, names: dict, colors: dict):
    """One panel per method (2 x 3): a log-scale histogram of its final 1-D samples, the atoms dashed."""
    import matplotlib.pyplot as plt
    order = list(names)
    _check_order(order, samples, "samples")
    fig, axes = plt.subplots(2, 3, figsize=(8.4, 5.6), sharex=True, sharey=True, layout="constrained")
    bins = np.linspace(min(atoms) - 0.6, max(atoms) + 0.6, 120)
    for ax, name in zip(axes.flat, order):
        ax.hist(np.asarray(samples[name]), bins=bins, color=colors[name])
        for a in atoms:
            ax.axvline(a, color="gray", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(names[name])
    for ax in axes[-1]:
        ax.set_xlabel(r"$x_{t_{\min}}$")
    for ax in axes[:, 0]:
        ax.set_ylabel("particles")
    return fig


def spread_over_time_figure(results: dict, *, names: dict, colors: dict):
    """Each method's variance ratio (results[name]["spread"]: "times", "var_ratio") against t."""
    import matplotlib.pyplot as plt
    order = list(names)
    _check_order(order, results)
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for name in order:
        sp = results[name]["spread"]
        ax.plot(sp["times"], sp["var_ratio"], marker=".", color=colors[name], label=names[name])
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="diffusion time $t$", ylabel="variance ratio (sampler / exact)",
           title="posterior spread over time, three-atom prior")
    ax.invert_xaxis()
    ax.legend(fontsize=9)
    return fig


def control_histograms_figure(hists: dict, exact_hist, edges, tv: dict, *, names: dict, colors: dict):
    """One panel per method (2 x 3): its binned density (hists[name]: masses per bin of `edges`)
    against the exact posterior's (black steps), titled with its TV."""
    import matplotlib.pyplot as plt
    order = list(names)
    _check_order(order, hists, "hists")
    edges = np.asarray(edges, dtype=float)
    if len(exact_hist) != len(edges) - 1:
        raise ValueError(f"exact_hist: expected {len(edges) - 1} bins, got {len(exact_hist)}")
    fig, axes = plt.subplots(2, 3, figsize=(8.4, 5.6), sharex=True, sharey=True, layout="constrained")
    centres, widths = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    for ax, name in zip(axes.flat, order):
        ax.bar(centres, np.asarray(hists[name]) / widths, width=widths, color=colors[name], alpha=0.8,
               label=names[name])
        ax.step(centres, np.asarray(exact_hist) / widths, where="mid", color="black", lw=1.2, label="exact posterior")
        ax.set_title(f"{names[name]}: TV {tv[name]:.3f}")
    for ax in axes[-1]:
        ax.set_xlabel(r"$x_{t_{\min}}$")
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=9)
    return fig


def multimodal_vs_control_figure(multimodal: dict, control: dict, *, names: dict):
    """Two panels of paired bars per method: the mass on unsupported atoms (with intervals) and
    the TV to the exact posterior, for the three-atom prior and the unimodal control (dotted: the
    exact sampler's TV)."""
    import matplotlib.pyplot as plt
    order = list(names)
    _check_order(order, multimodal, "multimodal")
    _check_order(order, control, "control")
    fig, axes = plt.subplots(2, 1, figsize=(8.4, 6.6), layout="constrained")
    xs = np.arange(len(order))
    for k, (label, res) in enumerate((("three-atom prior", multimodal), ("unimodal control", control))):
        un = np.array([res[n]["unsupported_mass"] for n in order])
        err = np.array([[res[n]["unsupported_mass"] - res[n]["unsupported_lower"] for n in order],
                        [res[n]["unsupported_upper"] - res[n]["unsupported_mass"] for n in order]])
        axes[0].bar(xs + (k - 0.5) * 0.4, un, 0.4, yerr=err, capsize=2, label=label, color=f"C{k}")
        axes[1].bar(xs + (k - 0.5) * 0.4, [res[n]["tv"] for n in order], 0.4, label=label, color=f"C{k}")
        axes[1].axhline(res["exact"]["tv"], color=f"C{k}", ls=":", lw=1)
    for ax in axes:
        ax.set_xticks(xs, [names[n] for n in order], rotation=20)
        ax.legend(fontsize=9)
    axes[0].set(ylabel="mass on unsupported atoms", title="hallucinated mass (95% Wilson intervals)")
    axes[1].set(ylabel="total variation to the exact posterior", title="TV to the exact posterior (dotted: exact sampler)")
    return fig
