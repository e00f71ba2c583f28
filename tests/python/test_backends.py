"""Python bindings on every GPU backend present, against the ref backend, on real activations.

For each of cuda, hip and opencl that this machine can open, the committed Gemma 3 270M sample
(data/gemma3-270m-sample: layers 0/5/9/17; 256 Python-docs then 256 KJV rows) goes through the library's calibrated
rotations with that backend and with ref: INT2 append + dequantize (everything INT2, and with
the sink/recent windows) and decode attention. A backend that cannot be opened is reported as
SKIPPED with the library's reason and exit status 77 (ctest's skip code); it never counts as
passed. ctest runs one entry per backend (`--backend NAME`, tests/python/CMakeLists.txt) with
OKV_LIBRARY set; without --backend every GPU backend is tried. Prints how many checks ran; exit 1
on any failure or when nothing was checked."""
import argparse
import os
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "python"))
import oscarkv as okv  # noqa: E402

SAMPLE = os.path.join(ROOT, "data", "gemma3-270m-sample")
LAYERS = (0, 5, 9, 17)
GPU_BACKENDS = ("cuda", "hip", "opencl")


def load(split, layer):
    d = os.path.join(SAMPLE, split, f"layer_{layer}")
    return tuple(np.load(os.path.join(d, f"{n}.npy")).astype(np.float32) for n in "qkv")


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare_round_trip(ctx, ref, k, v, lay, windows):
    """Dequantized K/V of a backend vs ref. Rotation in another float order can move a value across
    a rounding boundary, so a few codes may differ by one level: at most 0.5 % of elements, and the
    whole-array difference stays far below the INT2 error itself."""
    kb, vb = okv.quantize_kv(ctx, k, v, lay, windows=windows)
    kr, vr = okv.quantize_kv(ref, k, v, lay, windows=windows)
    out = []
    for name, got, want in (("K", kb, kr), ("V", vb, vr)):
        scale = np.abs(want).max()
        flips = float(np.mean(np.abs(got - want) > 1e-3 * scale))
        out.append(f"{name} differs {flips:.2e} of elements, rel {rel(got, want):.1e}")
        assert flips <= 5e-3 and rel(got, want) < 2e-2, out[-1]
    return out


def compare_decode(ctx, ref, q, k, v, lay):
    qr = q[-1] @ (lay["q_rotation"] if lay["q_rotation"] is not None else lay["k_rotation"])[0]
    got = okv.decode(ctx, qr, k, v, lay, n_q_heads=q.shape[1])
    want = okv.decode(ref, qr, k, v, lay, n_q_heads=q.shape[1])
    e = rel(got, want)
    assert e < 5e-3, f"decode rel diff {e:.2e}"  # bf16/fp16 arithmetic on the device
    return f"decode rel diff {e:.1e}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=GPU_BACKENDS, action="append", help="default: all of them")
    backends = ap.parse_args(argv).backend or GPU_BACKENDS
    calib = [load("calib", i) for i in LAYERS]
    rs = okv.calibrate(calib, fit_clips=True, holdout_tokens=64)
    # 512 rows (calibration then evaluation tokens): with the windows, sink 64 + INT2 192 + recent 256
    evals = [tuple(np.concatenate(x) for x in zip(c, load("eval", i))) for c, i in zip(calib, LAYERS)]
    ref = okv.Context("ref")
    checks = failed = skipped = 0
    for name in backends:
        try:
            ctx = okv.Context(name)
        except okv.OkvError as e:
            skipped += 1
            print(f"SKIPPED backend {name}: not available here ({e.name}); nothing was checked on it")
            continue
        for j, (q, k, v) in enumerate(evals):
            lay = rs.layer(j)
            steps = [("INT2 round trip, all INT2", lambda: compare_round_trip(ctx, ref, k, v, lay, False)),
                     ("INT2 round trip, sink + recent windows",
                      lambda: compare_round_trip(ctx, ref, k, v, lay, True)),
                     ("decode attention, windows", lambda: [compare_decode(ctx, ref, q, k, v, lay)])]
            for what, fn in steps:
                checks += 1
                try:
                    print(f"PASS {name} layer {LAYERS[j]} {what}: {'; '.join(fn())}")
                except Exception as e:  # report every failing check
                    failed += 1
                    print(f"FAIL {name} layer {LAYERS[j]} {what}: {e!r}")
        ctx.close()
    if skipped == len(backends):
        print(f"SKIPPED: none of {', '.join(backends)} is available here")
        return 77
    print(f"{checks} checks, {failed} failed, {skipped} backends skipped")
    return 1 if failed or not checks else 0


if __name__ == "__main__":
    sys.exit(main())
