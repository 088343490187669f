"""Integrations with other projects' code, one module each, imported only on demand:

- `fsdiag.adapters.deepinv`: deepinv's operators as fsdiag forward models, deepinv's samplers on
  the exact denoiser (`pip install "fsdiag[deepinv]"`).

An adapter turns the other project's objects into fsdiag's (a forward model, a likelihood, a
sampler with fsdiag's signature) and never changes how fsdiag judges them.
"""
