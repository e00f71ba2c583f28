#!/usr/bin/env python3
"""How much any key transform could still gain at 2 bits/element: a rate-distortion bound per layer.

For a key k (centered, covariance C_K) and queries with second moment C_Q, the score error of a
reconstructed key k^ is q.(k^ - k); its mean square is sum_i lambda_i E[e_i^2] in the eigenbasis U
of C_Q (lambda_i = query energy, mu_i = u_i' C_K u_i key variance, w_i = lambda_i mu_i). Printed
relative to the score variance sum_i w_i, per layer:
  ortho   R = U H P and uniform scalar INT2 (relative MSE eps per mixed coordinate):
          eps * mean(mu) * sum(lambda)
  scaled  R = U D H P with D = (lambda/mu)^(1/4), the optimum of that family (Cauchy-Schwarz):
          eps * (sum sqrt(w))^2 / d
  drop    scaled, but directions with the smallest w zeroed (their bits spent on the rest):
          the best subset; 0 dB over `scaled` means no transform of this kind gains more
  RD      the Gaussian rate-distortion bound at the same 2 bits/element (reverse water-filling:
          directions get different rates), what a format with per-direction bit widths could reach
eps = 0.115 is INT2 with a fitted clip on Gaussian rows (0.1175 is the 4-level Lloyd-Max optimum).

    PYTHONPATH=python python3 -m oscarkv_eval.rate_bound [build/quality-calib-cache/8192x2048/moments.npz]
"""
import sys
from pathlib import Path

import numpy as np

EPS_INT2 = 0.115
ROOT = Path(__file__).resolve().parents[2]


def spectra(cq, ck):
    """(lambda, mu, U): the eigenbasis U of C_Q (descending lambda) and the key variance mu along it."""
    lam, u = np.linalg.eigh((cq + cq.T) / 2)
    lam, u = np.maximum(lam[::-1], 0), u[:, ::-1]
    return lam, np.maximum(np.einsum("ij,jk,ki->i", u.T, ck, u), 0), u


def bounds(lam, mu, bits=2.0, eps=EPS_INT2):
    """Relative score distortions (ortho, scaled, drop, rd) and the directions drop keeps."""
    w = np.maximum(lam * mu, 1e-30)
    d, tot = len(w), w.sum()
    ortho = eps * mu.mean() * lam.sum()
    sq = np.sort(np.sqrt(w))[::-1]
    kept = np.cumsum(sq) ** 2 * eps / d  # first r directions kept, r = 1..d
    dropped = np.append(np.cumsum((sq**2)[::-1])[::-1][1:], 0.0)  # w of the directions after r
    r = int(np.argmin(kept + dropped))
    lo, hi = 1e-30, w.max()  # water level theta: sum max(0, log2(w/theta)/2) = bits * d
    for _ in range(200):
        th = np.sqrt(lo * hi)
        lo, hi = (th, hi) if np.maximum(0.5 * np.log2(w / th), 0).sum() > bits * d else (lo, th)
    rd = np.minimum(th, w).sum()
    return ortho / tot, kept[-1] / tot, (kept + dropped)[r] / tot, rd / tot, r + 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else ROOT / "build" / "quality-calib-cache" / "8192x2048" / "moments.npz"
    m = np.load(path)
    n = len([k for k in m.files if k.startswith("cq")])
    print("layer kind   ortho  scaled    drop (kept)     RD   scaled/RD dB")
    for i in range(n):
        lam, mu, _ = spectra(m[f"cq{i}"], m[f"ck{i}"])
        o, s, dr, rd, r = bounds(lam, mu)
        kind = "global" if (i + 1) % 6 == 0 else "local "
        print(f"{i:5d} {kind} {o:7.4f} {s:7.4f} {dr:7.4f} ({r:3d}) {rd:7.4f}   {10 * np.log10(s / rd):5.2f}")


if __name__ == "__main__":
    main()
