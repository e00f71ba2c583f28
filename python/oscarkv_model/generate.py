"""Greedy continuation from the numpy model (a quick sanity check of the forward pass).

    PYTHONPATH=python python3 -m oscarkv_model.generate "The capital of France is" --n 32
"""

import argparse
import time

from .model import Gemma3Model
from .tokenizer import Gemma3Tokenizer


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("prompt", nargs="+")
    ap.add_argument("--n", type=int, default=32, help="new tokens")
    ap.add_argument("--model", default=None, help="GGUF path (default: the pip package's file)")
    a = ap.parse_args(argv)
    model = Gemma3Model.load(a.model)
    tok = Gemma3Tokenizer(a.model)
    for p in a.prompt:
        t0 = time.time()
        new = model.generate(tok.encode(p), a.n)
        print(f"{p!r} -> {tok.decode(new)!r}  ({len(new)} tokens, {time.time()-t0:.1f}s)")


if __name__ == "__main__":
    main()
