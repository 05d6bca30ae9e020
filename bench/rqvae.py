"""One RQ-VAE training epoch: sidjax (one jitted scan per epoch) vs. the same model in PyTorch (CPU, eager).

Both train the same architecture (MLP encoder/decoder, L residual codebooks,
codebook + beta * commitment loss, straight-through estimator, AdamW) on the
same item embeddings (TF-IDF/LSA of the shipped Industrial_and_Scientific
items) with the same batches. Per-epoch wall time is the median over
`--epochs` epochs after a warm-up; our compile time is reported apart.

    python -m bench.rqvae [--epochs 10] [--batch_size 1024] [--hidden 512,256,128] [--single_thread]

Last line: speedup=<PyTorch seconds per epoch / ours>.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from sidjax.configs import base_config
from sidjax.data.sources import load_dataset
from sidjax.sid import embed, rqvae


class TorchRQVAE(torch.nn.Module):
    """The reference: the papers' RQ-VAE written the usual PyTorch way."""

    def __init__(self, config: rqvae.RQVAEConfig):
        super().__init__()
        sizes = (config.input_dim, *config.hidden, config.code_dim)

        def mlp(dims):
            layers = []
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
                layers.append(torch.nn.Linear(a, b))
                if i + 2 < len(dims):
                    layers.append(torch.nn.ReLU())
            return torch.nn.Sequential(*layers)

        self.encoder, self.decoder = mlp(sizes), mlp(sizes[::-1])
        self.codebooks = torch.nn.Parameter(torch.rand(config.levels, config.codebook_size, config.code_dim) * 0.01)
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.encoder(x)
        quantized = torch.zeros_like(residual)
        quant_loss = 0.0
        for book in self.codebooks:
            with torch.no_grad():  # the papers' distance formula; argmin needs no gradient
                d = (residual**2).sum(1, keepdim=True) - 2 * residual @ book.T + (book**2).sum(1)
                idx = d.argmin(dim=1)
            chosen = book[idx]
            quant_loss = quant_loss + torch.mean((chosen - residual.detach()) ** 2)
            quant_loss = quant_loss + self.config.beta * torch.mean((chosen.detach() - residual) ** 2)
            straight = residual + (chosen - residual).detach()
            quantized = quantized + straight
            residual = residual - straight
        recon = self.decoder(quantized)
        return torch.mean((recon - x) ** 2) + self.config.quant_weight * quant_loss / len(self.codebooks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--hidden", default="512,256,128")
    parser.add_argument("--dim", type=int, default=256, help="LSA embedding size")
    parser.add_argument("--single_thread", action="store_true",
                        help="one CPU thread each (steadier on a shared machine); set before JAX starts its backend")
    args = parser.parse_args()
    if args.single_thread:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
        torch.set_num_threads(1)

    dataset = load_dataset(base_config().data)
    x = embed.tfidf_lsa(dataset.items, dim=args.dim, min_df=2, max_df=0.5, title_weight=2.0, seed=0)
    config = rqvae.RQVAEConfig(input_dim=x.shape[1], hidden=tuple(int(h) for h in args.hidden.split(",")))
    batches = [
        np.array(rqvae.epoch_batches(len(x), args.batch_size, jax.random.key(e))) for e in range(args.epochs + 1)
    ]
    print(f"items={len(x)} dim={x.shape[1]} hidden={config.hidden} code_dim={config.code_dim} "
          f"levels={config.levels} K={config.codebook_size} batch={args.batch_size} steps/epoch={len(batches[0])}")

    # ours
    model = rqvae.RQVAE(config, rngs=nnx.Rngs(0))
    tx = rqvae.make_optimizer(1e-3, 1e-4)
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)
    run_epoch = rqvae.make_epoch_fn(graphdef, tx)
    x_dev = jnp.asarray(x)
    start = time.perf_counter()
    compiled = run_epoch.lower(params, opt_state, x_dev, jnp.asarray(batches[0])).compile()
    compile_s = time.perf_counter() - start

    torch.manual_seed(0)
    ref = TorchRQVAE(config)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=1e-4)
    xt = torch.from_numpy(np.array(x))

    def ours_epoch(b: np.ndarray) -> None:
        nonlocal params, opt_state
        params, opt_state, metrics = compiled(params, opt_state, x_dev, jnp.asarray(b))
        jax.block_until_ready(metrics)

    def torch_epoch(b: np.ndarray) -> None:
        for idx in b:
            loss = ref(xt[torch.from_numpy(idx).long()])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()

    ours_epoch(batches[0])  # warm-up
    torch_epoch(batches[0])
    ours, theirs = [], []
    for b in batches[1:]:  # alternate, so both see the same machine load
        for run, times in ((ours_epoch, ours), (torch_epoch, theirs)):
            start = time.perf_counter()
            run(b)
            times.append(time.perf_counter() - start)

    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"sidjax compile: {compile_s:.2f} s")
    print(f"sidjax  epoch: {ours_s * 1e3:.1f} ms (median of {len(ours)})")
    print(f"pytorch epoch: {theirs_s * 1e3:.1f} ms (median of {len(theirs)}, torch threads={torch.get_num_threads()})")
    print(f"speedup={theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
