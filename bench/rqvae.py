"""One RQ-VAE training epoch: sidjax (one jitted scan per epoch) vs. the same model in PyTorch (CPU, eager).

Both train the same architecture (MLP encoder/decoder, L residual codebooks,
codebook + beta * commitment loss, straight-through estimator, AdamW) on the
same item embeddings (TF-IDF/LSA of the shipped Industrial_and_Scientific
items) with the same batches. Epochs of the two alternate (bench.harness) for `--epochs`
rounds after a warm-up; min / median / max per side are reported, our compile time apart.

The encoder / decoder run in `--dtype` on both sides (bfloat16: sidjax's `rqvae.dtype` with float32
weights; PyTorch under `torch.autocast("cpu", dtype=torch.bfloat16)`, its fastest CPU mode); codebook
distances and losses stay float32 on both. `auto` (the default) is what `rqvae.dtype = "auto"` picks here.

    python -m bench.rqvae [--epochs 10] [--batch_size 1024] [--hidden 512,256,128] [--dtype auto] [--threads 1]

Then each side's epoch as FLOP/s and as a share of its framework's matmul peak measured in the same
run (bench.peaks). Last line: speedup=<PyTorch median seconds per epoch / ours>.
"""
from __future__ import annotations

import argparse

from bench import harness

harness.threads_before_jax()  # before jax is imported: XLA reads XLA_FLAGS when its backend starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from bench import peaks  # noqa: E402
from sidjax.configs import base_config  # noqa: E402
from sidjax.data.sources import load_dataset  # noqa: E402
from sidjax.sid import embed, rqvae  # noqa: E402


class TorchRQVAE(torch.nn.Module):
    """The reference: the papers' RQ-VAE written the usual PyTorch way."""

    def __init__(self, config: rqvae.RQVAEConfig):
        super().__init__()
        self.low_precision = config.dtype == "bfloat16"
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
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.low_precision):
            residual = self.encoder(x).float()
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
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.low_precision):
            recon = self.decoder(quantized).float()
        return torch.mean((recon - x) ** 2) + self.config.quant_weight * quant_loss / len(self.codebooks)


def epoch_flops(config: rqvae.RQVAEConfig, rows: int) -> float:
    """Matmul FLOPs of an epoch: encoder and decoder forward + backward (no gradient into the data), and
    each level's distances to its codebook (forward only: the argmin has no gradient)."""
    sizes = (config.input_dim, *config.hidden, config.code_dim)
    per_row = (peaks.mlp_train_flops(sizes, data_input=True) + peaks.mlp_train_flops(sizes[::-1], data_input=False)
               + config.levels * 2 * config.code_dim * config.codebook_size)
    return per_row * rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=harness.repeat_count, default=10, help="timed epochs per side")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--hidden", default="512,256,128")
    parser.add_argument("--dim", type=int, default=256, help="LSA embedding size")
    harness.add_dtype_arg(parser, "encoder / decoder compute dtype")
    harness.add_threads_arg(parser)
    args = parser.parse_args()
    print(harness.describe_machine(harness.machine()), flush=True)
    args.dtype = harness.chosen_dtype(args.dtype)

    dataset = load_dataset(base_config().data)
    x = embed.tfidf_lsa(dataset.items, dim=args.dim, min_df=2, max_df=0.5, title_weight=2.0, seed=0)
    config = rqvae.RQVAEConfig(input_dim=x.shape[1], hidden=tuple(int(h) for h in args.hidden.split(",")),
                               dtype=args.dtype)
    batches = [
        np.array(rqvae.epoch_batches(len(x), args.batch_size, jax.random.key(e))) for e in range(args.epochs + 1)
    ]
    print(f"items={len(x)} dim={x.shape[1]} hidden={config.hidden} code_dim={config.code_dim} "
          f"levels={config.levels} K={config.codebook_size} batch={args.batch_size} steps/epoch={len(batches[0])} "
          f"dtype={config.dtype}")

    # ours
    model = rqvae.RQVAE(config, rngs=nnx.Rngs(0))
    tx = rqvae.make_optimizer(1e-3, 1e-4)
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)
    run_epoch = rqvae.make_epoch_fn(graphdef, tx)
    x_dev = jnp.asarray(x)
    compiled, compile_s = harness.timed(
        lambda: run_epoch.lower(params, opt_state, x_dev, jnp.asarray(batches[0])).compile())

    torch.manual_seed(0)
    ref = TorchRQVAE(config)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=1e-4)
    xt = torch.from_numpy(np.array(x))
    ours_batches, torch_batches = iter(batches), iter(batches)  # both sides see the same batches in turn

    def ours_epoch() -> None:
        nonlocal params, opt_state
        params, opt_state, metrics = compiled(params, opt_state, x_dev, jnp.asarray(next(ours_batches)))
        jax.block_until_ready(metrics)

    def torch_epoch() -> None:
        for idx in next(torch_batches):
            loss = ref(xt[torch.from_numpy(idx).long()])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()

    print(f"sidjax compile: {compile_s:.2f} s", flush=True)
    result = harness.measure("rqvae_epoch", "sidjax", ours_epoch, "pytorch", torch_epoch, repeats=args.epochs)
    measured_peaks = peaks.matmul_peaks(config.dtype)
    print(peaks.describe_peaks(measured_peaks))
    peaks.print_shares("epoch", result, epoch_flops(config, batches[0].size), measured_peaks, config.dtype)
    harness.finish(result)


if __name__ == "__main__":
    main()
