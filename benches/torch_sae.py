"""PyTorch implementation of msae's SAE training step, for the side-by-side throughput benchmark.

Same recipe as msae (and the paper's reference code): pre-bias, encoder, activation, decoder,
nmse loss, backward, decoder rows renormalised with the encoder/bias rescaled, radial decoder
gradient removed, global grad-norm clip 1.0, Adam. Builds the model, takes one warm-up step and
prints {"ready": true}; then, for every line S read from stdin, takes S timed steps and prints
{"arch": ..., "samples_per_s": ...}. Run by `cargo bench --bench train_throughput`, which
alternates it with msae; not used in CI.

usage: python3 torch_sae.py THREADS D N BATCH ARCH [DEVICE] [LATENT_BIAS]
  (DEVICE: cpu, the default, or cuda[:N]; LATENT_BIAS: initial latent bias, default 0)
ARCH `products` times, instead of a step, the five dense matrix products of a step whose code
keeps half of its entries (encoder product, reconstruction, code gradient, decoder and encoder
gradients) into outputs allocated once: the floor under such a step.
"""
import json
import os
import sys
import time

import torch


def topk_relu(p, k):
    vals, idx = p.topk(k, dim=-1)
    return torch.zeros_like(p).scatter_(-1, idx, vals.relu())


def batch_topk_relu(p, k):
    flat = p.flatten()
    vals, idx = flat.topk(k * p.shape[0])
    return torch.zeros_like(flat).scatter_(0, idx, vals.relu()).view_as(p)


class JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, log_theta, eps):
        theta = log_theta.exp()
        r = p.relu()
        ctx.save_for_backward(r, theta)
        ctx.eps = eps
        return r * (r > theta)

    @staticmethod
    def backward(ctx, g):
        r, theta = ctx.saved_tensors
        eps = ctx.eps
        rect = ((r - theta).abs() < eps / 2).to(g.dtype)
        g_in = g * (r > theta)
        g_theta = (-(theta / eps) * rect * g).sum(0) * theta  # chain factor of log θ
        return g_in, g_theta, None


def nmse(x_hat, x):
    return (((x_hat - x) ** 2).mean(-1) / (x**2).mean(-1)).mean()


def nesting(n, start=64):
    levels = [start]
    while levels[-1] * 2 <= n:
        levels.append(levels[-1] * 2)
    if levels[-1] != n:
        levels.append(n)
    return levels


def model(arch, d, n, batch, device, latent_bias=0.0):
    """The timing function of a freshly built and warmed-up model: steps -> samples/s."""
    torch.manual_seed(0)
    w = torch.empty(n, d)
    torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")
    w = (w * (0.1 / w.norm(dim=1, keepdim=True))).to(device)
    pre_bias = torch.zeros(d, device=device, requires_grad=True)
    enc = w.t().clone().requires_grad_(True)
    lat_bias = torch.full((n,), latent_bias, device=device, requires_grad=True)
    dec = w.clone().requires_grad_(True)
    log_theta = torch.full((n,), -6.907755, device=device, requires_grad=True)
    params = [pre_bias, enc, lat_bias, dec] + ([log_theta] if arch == "jumprelu" else [])
    opt = torch.optim.Adam(params, lr=5e-4, betas=(0.9, 0.999), eps=6.25e-10)
    x_all = torch.randn(batch * 2, d).to(device)
    levels = nesting(n)
    weights = [1.0] * len(levels)

    def step(x):
        opt.zero_grad(set_to_none=True)
        p = (x - pre_bias) @ enc + lat_bias
        if arch == "msae":
            # As the reference code does it: one top-k and one full decode per nesting level.
            loss = 0.0
            for k, wt in zip(levels, weights):
                z = p.relu() if k >= n else topk_relu(p, k)
                loss = loss + wt * nmse(z @ dec + pre_bias, x)
            loss = loss / sum(weights)
        else:
            if arch == "topk":
                z = topk_relu(p, 64)
            elif arch == "batchtopk":
                z = batch_topk_relu(p, 32)
            elif arch == "relu":
                z = p.relu()
            else:
                z = JumpReLU.apply(p, log_theta, 0.001)
            x_hat = z @ dec + pre_bias
            loss = nmse(x_hat, x)
            if arch == "relu":
                loss = loss + 0.003 * (z.abs().sum(-1) / x.norm(dim=-1)).mean()
            elif arch == "jumprelu":
                loss = loss + 0.001 * (z > 0).float().sum(-1).mean()
        loss.backward()
        with torch.no_grad():
            r = dec.norm(dim=1) + torch.finfo(torch.float32).eps
            dec.div_(r[:, None])
            enc.mul_(r[None, :])
            lat_bias.mul_(r)
            g = dec.grad
            g.sub_((g * dec).sum(1, keepdim=True) * dec)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def sync():
        # GPU work is asynchronous: the clock must wait for it.
        if x_all.is_cuda:
            torch.cuda.synchronize()

    step(x_all[:batch])  # warm-up
    sync()
    done = 0

    def timed(steps):
        nonlocal done
        start = time.perf_counter()
        for _ in range(steps):
            off = (done % 2) * batch
            step(x_all[off : off + batch])
            done += 1
        sync()
        return steps * batch / (time.perf_counter() - start)

    return timed


def timing(step, batch, sync):
    """Warms `step` up and returns its timing function: steps -> samples/s."""
    step()
    sync()

    def timed(steps):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return steps * batch / (time.perf_counter() - start)

    return timed


def products(d, n, batch, device):
    """The timing function of the five matrix products of a dense step."""
    g = torch.Generator().manual_seed(2)
    normal = lambda *shape: torch.randn(*shape, generator=g).to(device)
    xc, w_enc, w_dec, c = normal(batch, d), normal(d, n), normal(n, d), normal(batch, d)
    z = normal(batch, n).relu()
    p, dz = torch.empty(batch, n, device=device), torch.empty(batch, n, device=device)
    recon = torch.empty(batch, d, device=device)
    g_dec, g_enc = torch.empty(n, d, device=device), torch.empty(d, n, device=device)

    def step():
        torch.mm(xc, w_enc, out=p)
        torch.mm(z, w_dec, out=recon)
        torch.mm(c, w_dec.t(), out=dz)
        torch.mm(z.t(), c, out=g_dec)
        torch.mm(xc.t(), dz, out=g_enc)

    sync = torch.cuda.synchronize if xc.is_cuda else (lambda: None)
    return timing(step, batch, sync)


def main():
    threads, d, n, batch = (int(a) for a in sys.argv[1:5])
    arch = sys.argv[5]
    device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
    latent_bias = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    torch.set_num_threads(threads)
    if arch == "products":
        timed = products(d, n, batch, device)
    else:
        timed = model(arch, d, n, batch, device, latent_bias)
    # The threads PyTorch actually uses (its intra-op pool, the inter-op pool, and what the
    # environment asked OpenMP for), so a reader can tell a mis-set run from a slow one.
    print(
        json.dumps(
            {
                "ready": True,
                "device": device,
                "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        steps = int(line)
        print(json.dumps({"arch": arch, "samples_per_s": timed(steps)}), flush=True)


if __name__ == "__main__":
    main()
