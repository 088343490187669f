"""Atoms sharded over 2 processes (gloo, CPU): the same moments and the same FSR sampler output
as one process holding all the atoms."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fsdiag

WORLD = 2


def _problem():
    g = torch.Generator().manual_seed(7)
    atoms = torch.randn(301, 3, generator=g, dtype=torch.float64) * 1.3 + 0.5   # odd N: unequal shards
    weights = torch.rand(301, generator=g, dtype=torch.float64) + 0.2
    lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine.example(3, seed=1), torch.tensor([0.4]), 0.6)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    return atoms, weights, lik, x


def _shard(rank, n):
    return slice(rank * n // WORLD, (rank + 1) * n // WORLD)


def _worker(rank, port, out_dir):
    from fsdiag.distributed import ShardedPrior

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        atoms, weights, lik, x = _problem()
        sl = _shard(rank, atoms.shape[0])
        prior = ShardedPrior(atoms[sl], weights[sl], device="cpu", chunk_size=64)
        ll = lik.log_prob(prior.atoms)
        res = {}
        for abar in (0.9, 0.3, 0.02):
            mo = prior.moments(x, abar, ll)
            res[abar] = (mo.log_norm, mo.mean, mo.log_norm_cond, mo.mean_cond,
                         prior.log_density(x, abar), prior.posterior_moments(x, abar, ll).mean)
        run = fsdiag.sample(prior, lik, method="fsr", n_particles=32, n_steps=12, seed=5, record=3, progress=False)
        res["run"] = (run.samples, run.tweedie)
        res["scale"] = prior.scale
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_gloo_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    atoms, weights, lik, x = _problem()
    whole = fsdiag.EmpiricalPrior(atoms, weights, device="cpu", chunk_size=64)
    ll = lik.log_prob(atoms)
    for abar in (0.9, 0.3, 0.02):
        mo = whole.moments(x, abar, ll)
        want = (mo.log_norm, mo.mean, mo.log_norm_cond, mo.mean_cond, whole.log_density(x, abar),
                whole.posterior_moments(x, abar, ll).mean)
        for res in ranks:
            for got, ref in zip(res[abar], want):
                torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    run = fsdiag.sample(whole, lik, method="fsr", n_particles=32, n_steps=12, seed=5, record=3, progress=False)
    for res in ranks:
        torch.testing.assert_close(res["run"][0], run.samples, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(res["run"][1], run.tweedie, rtol=1e-9, atol=1e-9)
        assert res["scale"] == whole.scale
    # both ranks hold bit-identical particles (the combination is the same on every rank)
    assert torch.equal(ranks[0]["run"][0], ranks[1]["run"][0])


def test_sharded_prior_needs_an_initialised_process_group():
    from fsdiag.distributed import ShardedPrior

    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match="init_process_group"):
        ShardedPrior(torch.zeros(4, 2), device="cpu")
