#!/usr/bin/python3
"""Reference values for test/flow-match.test.ts.

An independent NumPy re-implementation of diffusers' FlowMatchEulerDiscreteScheduler (the SD3
scheduler), written from its documented behaviour (huggingface/diffusers,
src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py, read for understanding) with
diffusers' dtypes: the training sigmas in float32 (torch tensors in __init__), the inference grid and
shift in float64 (NumPy in set_timesteps), then cast to float32; step arithmetic in float32.
It mirrors diffusers' stateful API (set_timesteps, then step() advancing an index).

Run:   /usr/bin/python3 scripts/reference/flow_match_reference.py    (writes the JSON)

Output: test/reference/flow-match-cases.json: for every case its config, steps, mu (dynamic shift),
timesteps, sigmas and the samples after every step of a run on fixed 48-element inputs
(model output at step k = a * cos(k) + b * sin(k) in float32).
"""
import json
import math
import os

import numpy as np

F32 = np.float32

DEFAULTS = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5,
                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
                time_shift_type="exponential")


class FlowMatchEuler:
    def __init__(self, **cfg):
        self.cfg = dict(DEFAULTS)
        self.cfg.update({k: v for k, v in cfg.items() if not k.startswith("_")})
        n = self.cfg["num_train_timesteps"]
        t = np.linspace(1, n, n, dtype=np.float32)[::-1].copy()
        s = (t / F32(n)).astype(F32)
        if not self.cfg["use_dynamic_shifting"]:
            sh = F32(self.cfg["shift"])
            s = ((sh * s) / (F32(1) + (sh - F32(1)) * s)).astype(F32)
        self.sigma_max = float(s[0])
        self.sigma_min = float(s[-1])

    def mu_for(self, seq_len):
        c = self.cfg
        slope = (c["max_shift"] - c["base_shift"]) / (c["max_image_seq_len"] - c["base_image_seq_len"])
        intercept = c["base_shift"] - slope * c["base_image_seq_len"]
        return seq_len * slope + intercept

    def set_timesteps(self, steps, mu=None):
        n = self.cfg["num_train_timesteps"]
        grid = np.linspace(self.sigma_max * n, self.sigma_min * n, steps)  # float64
        s = grid / n
        if self.cfg["use_dynamic_shifting"]:
            if mu is None:
                raise ValueError("mu required")
            if self.cfg["time_shift_type"] == "exponential":
                s = math.exp(mu) / (math.exp(mu) + (1 / s - 1) ** 1.0)
            else:
                s = mu / (mu + (1 / s - 1) ** 1.0)
        else:
            sh = self.cfg["shift"]
            s = sh * s / (1 + (sh - 1) * s)
        s32 = s.astype(F32)
        self.timesteps = (s32 * F32(n)).astype(F32)
        self.sigmas = np.concatenate([s32, np.zeros(1, dtype=F32)])
        self.index = 0

    def step(self, v, x):
        dt = F32(self.sigmas[self.index + 1] - self.sigmas[self.index])
        out = (x + (dt * v).astype(F32)).astype(F32)
        self.index += 1
        return out


CASES = [
    ("sd3 (shift 3)", dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=1000, shift=3.0), 28, None),
    ("sd3 (shift 3), 50 steps", dict(_class_name="FlowMatchEulerDiscreteScheduler", shift=3.0), 50, None),
    ("sd3 (shift 3), 1 step", dict(_class_name="FlowMatchEulerDiscreteScheduler", shift=3.0), 1, None),
    ("no shift, 7 steps", dict(_class_name="FlowMatchEulerDiscreteScheduler"), 7, None),
    ("dynamic shift, exponential, 4096 tokens", dict(_class_name="FlowMatchEulerDiscreteScheduler", shift=3.0,
                                                     use_dynamic_shifting=True, max_shift=1.15), 20, 4096),
    ("dynamic shift, exponential, 16384 tokens", dict(_class_name="FlowMatchEulerDiscreteScheduler",
                                                      use_dynamic_shifting=True, base_shift=0.5, max_shift=1.16), 12, 16384),
    ("dynamic shift, linear", dict(_class_name="FlowMatchEulerDiscreteScheduler", use_dynamic_shifting=True,
                                   time_shift_type="linear", max_shift=1.15), 9, 1024),
    ("500 train timesteps, shift 2.5", dict(_class_name="FlowMatchEulerDiscreteScheduler", num_train_timesteps=500,
                                            shift=2.5), 13, None),
]

N_ELEM = 48


def main():
    rng = np.random.default_rng(1234)
    x0 = rng.standard_normal(N_ELEM).astype(F32)
    a = rng.standard_normal(N_ELEM).astype(F32)
    b = rng.standard_normal(N_ELEM).astype(F32)
    out = []
    for name, cfg, steps, seq_len in CASES:
        sch = FlowMatchEuler(**cfg)
        mu = sch.mu_for(seq_len) if seq_len is not None else None
        sch.set_timesteps(steps, mu)
        x = x0.copy()
        samples = []
        for k in range(steps):
            v = (a * F32(math.cos(k)) + b * F32(math.sin(k))).astype(F32)
            x = sch.step(v, x)
            samples.append([float(e) for e in x])
        out.append(dict(name=name, config=cfg, steps=steps, imageSeqLen=seq_len, mu=mu,
                        timesteps=[float(t) for t in sch.timesteps], sigmas=[float(s) for s in sch.sigmas],
                        samples=samples))
    data = dict(inputs=dict(x=[float(e) for e in x0], a=[float(e) for e in a], b=[float(e) for e in b]), cases=out)
    path = os.path.join(os.path.dirname(__file__), "..", "..", "test", "reference", "flow-match-cases.json")
    with open(path, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    print("wrote", os.path.normpath(path), len(out), "cases")


if __name__ == "__main__":
    main()
