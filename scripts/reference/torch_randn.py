"""Writes the torch.randn reference vectors that test/randn.test.ts checks against.

Run with Debian's interpreter (the `python3` on PATH cannot see Debian's packages):

    apt-get install -y python3-torch python3-numpy
    /usr/bin/python3 scripts/reference/torch_randn.py

Outputs (committed; the tests never need torch):
  test/reference/randn-small.json    every value of small tensors and of successive draws on one generator
  test/reference/randn-large.json    sha256 of the float32 bytes + values at fixed indices for big latents
  test/reference/randn-kernels.json  the same tensor from torch's non-AVX2 ("default") kernel, for the
                                     documented tolerance between torch's own CPU kernels
  test/reference/randn-mt-key.json   raw MT19937 outputs after init_by_array (Python's random.seed), the
                                     seeding createRandom uses for derived streams

torch picks its CPU kernel at run time (AVX2 here); the "default" kernel is forced with
ATEN_CPU_CAPABILITY=default in a child process.
"""

import base64
import hashlib
import json
import os
import random
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "test", "reference")

# Seeds beyond 2^53 are written as strings (parsed as bigint by the test).
SEEDS = [0, 1, 42, 2**32 - 1, 2**32, 2**32 + 7, 12345678901234567, 2**63 - 1, -1]
SMALL_SHAPES = [[1], [2], [7], [15], [16], [17], [31], [33], [2, 8], [3, 5, 7]]
LARGE_SHAPES = [[1, 4, 64, 64], [1, 4, 96, 96], [1, 4, 128, 128], [1, 3, 99, 101], [1, 4, 256, 256]]
LARGE_SEEDS = [0, 42, 2**63 - 1]
SAMPLES = 256


def seed_json(seed):
    return seed if abs(seed) < 2**53 else str(seed)


def generator(seed):
    return torch.Generator("cpu").manual_seed(seed)


def values(t):
    # float32 -> Python float is exact, and repr round-trips, so JSON keeps every bit.
    return [float(v) for v in t.reshape(-1).tolist()]


def sample_indices(n):
    """SAMPLES indices spread over the tensor, plus the first and last 16 (the tail block)."""
    idx = set(range(min(16, n))) | set(range(max(0, n - 16), n))
    step = max(1, n // SAMPLES)
    idx |= set(range(0, n, step))
    return sorted(idx)


def capability():
    return torch.__config__.show().split("CPU capability usage:")[1].split("\n")[0].strip()


def small():
    cases = []
    for seed in SEEDS:
        for shape in SMALL_SHAPES:
            t = torch.randn(shape, generator=generator(seed), dtype=torch.float32)
            cases.append({"seed": seed_json(seed), "shape": shape, "values": values(t)})
    # Successive draws on one generator: the stream continues, and a scalar-path (< 16) draw leaves
    # its second Box-Muller value cached for the next scalar-path draw, even across a vectorised one.
    sequences = []
    for seed, shapes in [
        (0, [[4], [20]]),
        (7, [[7], [3], [20], [1], [5]]),
        (2**63 - 1, [[1], [16], [1], [17], [9]]),
        (123, [[3, 5, 7], [2], [1, 4, 8, 8]]),
    ]:
        g = generator(seed)
        draws = [{"shape": s, "values": values(torch.randn(s, generator=g, dtype=torch.float32))} for s in shapes]
        sequences.append({"seed": seed_json(seed), "draws": draws})
    # manual_seed on a used generator restarts the stream and drops the cached value.
    g = generator(5)
    first = values(torch.randn([3], generator=g))
    g.manual_seed(5)
    again = values(torch.randn([3], generator=g))
    return {
        "torch": torch.__version__,
        "cpu_capability": capability(),
        "cases": cases,
        "sequences": sequences,
        "reseed": {"seed": 5, "shape": [3], "first": first, "after_manual_seed": again},
    }


def large():
    cases = []
    for seed in LARGE_SEEDS:
        for shape in LARGE_SHAPES:
            t = torch.randn(shape, generator=generator(seed), dtype=torch.float32)
            flat = t.reshape(-1).numpy().astype("<f4")
            idx = sample_indices(flat.size)
            cases.append({
                "seed": seed_json(seed),
                "shape": shape,
                "sha256": hashlib.sha256(flat.tobytes()).hexdigest(),
                "indices": idx,
                "values": [float(flat[i]) for i in idx],
            })
    return {"torch": torch.__version__, "cpu_capability": capability(), "cases": cases}


def kernels():
    code = (
        "import torch,base64,sys;"
        "t=torch.randn([1,4,32,32],generator=torch.Generator('cpu').manual_seed(0),dtype=torch.float32);"
        "cap=torch.__config__.show().split('CPU capability usage:')[1].split(chr(10))[0].strip();"
        "print(cap);print(base64.b64encode(t.numpy().astype('<f4').tobytes()).decode())"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    cap, data = out.stdout.strip().split("\n")
    return {
        "torch": torch.__version__,
        "cpu_capability": cap,
        "seed": 0,
        "shape": [1, 4, 32, 32],
        "float32_le_base64": data,
    }


def mt_key():
    cases = []
    for key in [[1, 2, 3], [0x12345678], [5, 0, 6, 0x7474696a, 0x7265], [2**32 - 1] * 700]:
        n = sum(w << (32 * i) for i, w in enumerate(key))
        r = random.Random(n)  # CPython seeds MT19937 with init_by_array(32-bit words of n, low first)
        outs = [r.getrandbits(32) for _ in range(1000)]
        cases.append({"key": key, "first": outs[:8], "at999": outs[999]})
    return {"python": sys.version.split()[0], "cases": cases}


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    write("randn-small.json", small())
    write("randn-large.json", large())
    write("randn-kernels.json", kernels())
    write("randn-mt-key.json", mt_key())


if __name__ == "__main__":
    main()
