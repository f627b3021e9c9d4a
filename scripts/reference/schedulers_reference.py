#!/usr/bin/python3
"""Reference values for test/schedulers.test.ts.

An independent NumPy re-implementation of the diffusers schedulers this project ports
(EulerDiscrete, EulerAncestralDiscrete, DDIM, PNDM, DPMSolverMultistep (DPM++ 2M), LMSDiscrete),
written from diffusers' scheduler code (huggingface/diffusers, src/diffusers/schedulers/, read for
understanding) with diffusers' dtypes: schedules and step arithmetic in float32 like diffusers' torch
tensors, timestep grids and interpolation in float64 like its NumPy code. It mirrors diffusers'
stateful API (set_timesteps, then step() mutating the object) rather than the TypeScript design.

Run:   /usr/bin/python3 scripts/reference/schedulers_reference.py            (writes the JSON)
       /usr/bin/python3 scripts/reference/schedulers_reference.py --check-torch
The second form also compares this script's float32 schedule with torch's own ops (Debian's
python3-torch) and prints the largest relative differences; it writes nothing.

Output: test/reference/schedulers-cases.json: for every case, the scheduler's timesteps, sigmas or
alphas_cumprod values, init noise sigma, input scales, noise levels, and the samples after chosen
steps of a full run on fixed 64-element inputs.
"""
import json
import math
import os
import sys

import numpy as np

F32 = np.float32
N_ELEM = 64

# Constructor defaults of the diffusers classes (only the fields used here).
COMMON = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
              trained_betas=None, prediction_type="epsilon", steps_offset=0)
DEFAULTS = {
    "EulerDiscreteScheduler": dict(COMMON, interpolation_type="linear", use_karras_sigmas=False,
                                   sigma_min=None, sigma_max=None, timestep_spacing="linspace",
                                   rescale_betas_zero_snr=False, final_sigmas_type="zero"),
    "EulerAncestralDiscreteScheduler": dict(COMMON, timestep_spacing="linspace", rescale_betas_zero_snr=False),
    "DDIMScheduler": dict(COMMON, clip_sample=True, set_alpha_to_one=True, clip_sample_range=1.0,
                          timestep_spacing="leading", rescale_betas_zero_snr=False),
    "PNDMScheduler": dict(COMMON, skip_prk_steps=False, set_alpha_to_one=False, timestep_spacing="leading"),
    "DPMSolverMultistepScheduler": dict(COMMON, solver_order=2, algorithm_type="dpmsolver++",
                                        solver_type="midpoint", lower_order_final=True, euler_at_final=False,
                                        use_karras_sigmas=False, final_sigmas_type="zero",
                                        timestep_spacing="linspace", rescale_betas_zero_snr=False),
    "LMSDiscreteScheduler": dict(COMMON, use_karras_sigmas=False, timestep_spacing="linspace"),
}
NAME_TO_CLASS = {"euler": "EulerDiscreteScheduler", "euler-ancestral": "EulerAncestralDiscreteScheduler",
                 "ddim": "DDIMScheduler", "pndm": "PNDMScheduler", "dpmpp-2m": "DPMSolverMultistepScheduler",
                 "lms": "LMSDiscreteScheduler"}


def effective_config(file_cfg, target_class):
    """What Target.from_config(Source(**file_cfg).config) sees."""
    cfg = dict(DEFAULTS[target_class])
    source = file_cfg.get("_class_name")
    if source in DEFAULTS:
        cfg.update({k: v for k, v in DEFAULTS[source].items() if v is not None})
    cfg.update({k: v for k, v in file_cfg.items() if v is not None})
    return cfg


# ---------------------------------------------------------------------------------------------
# Training schedule (float32 like diffusers' tensors)

def make_betas(cfg):
    n = cfg["num_train_timesteps"]
    if cfg.get("trained_betas") is not None:
        b = np.asarray(cfg["trained_betas"], dtype=F32)
    elif cfg["beta_schedule"] == "linear":
        b = np.linspace(cfg["beta_start"], cfg["beta_end"], n).astype(F32)
    elif cfg["beta_schedule"] == "scaled_linear":
        b = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n).astype(F32) ** 2
    elif cfg["beta_schedule"] == "squaredcos_cap_v2":
        def abar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        b = np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)]).astype(F32)
    else:
        raise ValueError(cfg["beta_schedule"])
    if cfg.get("rescale_betas_zero_snr"):
        b = rescale_zero_terminal_snr(b)
    return b


def cumprod_f32(alphas):
    # torch.cumprod on CPU float32 accumulates in float64 and stores float32.
    return np.cumprod(alphas.astype(np.float64)).astype(F32)


def rescale_zero_terminal_snr(betas):
    abar_sqrt = np.sqrt(cumprod_f32(F32(1) - betas))
    s0, sT = abar_sqrt[0], abar_sqrt[-1]
    abar_sqrt = (abar_sqrt - sT) * (s0 / (s0 - sT))
    abar = abar_sqrt ** 2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]]).astype(F32)
    return (F32(1) - alphas).astype(F32)


def make_alphas_cumprod(cfg, pin_terminal):
    abar = cumprod_f32(F32(1) - make_betas(cfg))
    if pin_terminal and cfg.get("rescale_betas_zero_snr"):
        abar[-1] = F32(2.0 ** -24)
    return abar


def sigmas_of(abar):
    return np.sqrt((F32(1) - abar) / abar).astype(F32)


def spaced(cfg, num_steps, kind):
    """Descending timesteps. kind: 'float' (Euler/LMS), 'int' (DDIM/PNDM)."""
    n = cfg["num_train_timesteps"]
    sp = cfg["timestep_spacing"]
    if sp == "linspace":
        t = np.linspace(0, n - 1, num_steps)[::-1]
        return t.astype(F32) if kind == "float" else t.round().astype(np.int64)
    if sp == "leading":
        ratio = n // num_steps
        return (np.arange(0, num_steps) * ratio)[::-1] + cfg["steps_offset"]
    if sp == "trailing":
        t = np.arange(n, 0, -n / num_steps).round() - 1
        # NumPy's arange can give num_steps + 1 values (the project keeps the first num_steps).
        return t[:num_steps]
    raise ValueError(sp)


def karras(sig_min, sig_max, count):
    ramp = np.linspace(0, 1, count)
    lo, hi = sig_min ** (1 / 7.0), sig_max ** (1 / 7.0)
    return (hi + ramp * (lo - hi)) ** 7.0


def sigma_to_t(sigma, log_sigmas):
    log_sigma = np.log(max(sigma, 1e-10))
    ok = np.nonzero(log_sigma - log_sigmas >= 0)[0]
    lo = min(ok[-1] if len(ok) else 0, len(log_sigmas) - 2)
    w = (log_sigmas[lo] - log_sigma) / (log_sigmas[lo] - log_sigmas[lo + 1])
    w = min(max(w, 0.0), 1.0)
    return (1 - w) * lo + w * (lo + 1)


# ---------------------------------------------------------------------------------------------
# Schedulers, diffusers-style (mutable)

class SigmaBase:
    """Euler / Euler ancestral / LMS grid: sample = x0 + sigma * eps."""

    def __init__(self, cfg, num_steps, karras_ok, config_range, final_type_ok, pin):
        self.cfg = cfg
        abar = make_alphas_cumprod(cfg, pin)
        train = sigmas_of(abar)
        ts = np.asarray(spaced(cfg, num_steps, "float"), dtype=F32)
        sig = np.interp(ts.astype(np.float64), np.arange(len(train)), train.astype(np.float64))
        if karras_ok and cfg.get("use_karras_sigmas"):
            lo = cfg.get("sigma_min") if config_range and cfg.get("sigma_min") is not None else sig[-1]
            hi = cfg.get("sigma_max") if config_range and cfg.get("sigma_max") is not None else sig[0]
            sig = karras(lo, hi, num_steps)
            log_sigmas = np.log(train)
            ts = np.array([sigma_to_t(s, log_sigmas) for s in sig])
        last = 0.0
        if final_type_ok and cfg.get("final_sigmas_type") == "sigma_min":
            last = float(train[0])
        self.sigmas = np.concatenate([sig, [last]]).astype(F32)
        self.timesteps = ts.astype(F32)
        m = self.sigmas.max()
        self.init_noise_sigma = m if cfg["timestep_spacing"] in ("linspace", "trailing") else np.sqrt(m * m + F32(1))
        self.k = 0

    def input_scale(self, k):
        s = self.sigmas[k]
        return 1.0 / float(np.sqrt(s * s + F32(1)))

    def noise_level(self, k):
        return 1.0, float(self.sigmas[k])

    def x0(self, out, x, sigma):
        p = self.cfg["prediction_type"]
        if p == "epsilon":
            return x - sigma * out
        if p == "v_prediction":
            return out * (-sigma / np.sqrt(sigma * sigma + F32(1))) + x / (sigma * sigma + F32(1))
        return out


class Euler(SigmaBase):
    def __init__(self, cfg, num_steps):
        super().__init__(cfg, num_steps, True, True, True, True)

    def step(self, out, x, noise):
        sigma = self.sigmas[self.k]
        x0 = self.x0(out, x, sigma)
        d = (x - x0) / sigma
        prev = x + d * (self.sigmas[self.k + 1] - sigma)
        self.k += 1
        return prev.astype(F32)


class EulerAncestral(SigmaBase):
    def __init__(self, cfg, num_steps):
        super().__init__(cfg, num_steps, False, False, False, True)

    def step(self, out, x, noise):
        s_from, s_to = self.sigmas[self.k], self.sigmas[self.k + 1]
        x0 = self.x0(out, x, s_from)
        to2, from2 = s_to * s_to, s_from * s_from
        up = np.sqrt(to2 * (from2 - to2) / from2)
        down = np.sqrt(to2 - up * up)
        prev = x + (x - x0) / s_from * (down - s_from)
        prev = prev + noise * up
        self.k += 1
        return prev.astype(F32)


class Lms(SigmaBase):
    def __init__(self, cfg, num_steps):
        super().__init__(cfg, num_steps, True, False, False, False)
        self.derivs = []

    def coeff(self, order, t, cur):
        # Exact integral of the Lagrange basis polynomial (NumPy polynomial algebra).
        s = self.sigmas.astype(np.float64)
        poly = np.poly1d([1.0])
        for k in range(order):
            if k != cur:
                poly = poly * np.poly1d([1.0, -s[t - k]]) / (s[t - cur] - s[t - k])
        integral = np.polyint(poly)
        return integral(s[t + 1]) - integral(s[t])

    def step(self, out, x, noise):
        sigma = self.sigmas[self.k]
        d = ((x - self.x0(out, x, sigma)) / sigma).astype(F32)
        self.derivs = (self.derivs + [d])[-4:]
        order = min(self.k + 1, 4)
        # Python's sum over float32 tensors: each coefficient (a Python float) is applied in float32.
        total = 0
        for cur, deriv in zip(range(order), reversed(self.derivs)):
            total = total + F32(self.coeff(order, self.k, cur)) * deriv
        self.k += 1
        return (x + total).astype(F32)


class Ddim:
    def __init__(self, cfg, num_steps):
        self.cfg = cfg
        self.abar = make_alphas_cumprod(cfg, False)
        self.final = F32(1.0) if cfg["set_alpha_to_one"] else self.abar[0]
        self.timesteps = spaced(cfg, num_steps, "int").astype(np.int64)
        self.stride = cfg["num_train_timesteps"] // num_steps
        self.init_noise_sigma = 1.0
        self.k = 0

    def a(self, t):
        return self.abar[t] if t >= 0 else self.final

    def input_scale(self, k):
        return 1.0

    def noise_level(self, k):
        t = self.timesteps[k] if k < len(self.timesteps) else self.timesteps[-1] - self.stride
        a = self.a(t)
        return float(np.sqrt(a)), float(np.sqrt(F32(1) - a))

    def step(self, out, x, noise):
        t = self.timesteps[self.k]
        a, ap = self.a(t), self.a(t - self.stride)
        b = F32(1) - a
        p = self.cfg["prediction_type"]
        if p == "epsilon":
            x0, eps = (x - np.sqrt(b) * out) / np.sqrt(a), out
        elif p == "sample":
            x0 = out
            eps = (x - np.sqrt(a) * x0) / np.sqrt(b)
        else:
            x0 = np.sqrt(a) * x - np.sqrt(b) * out
            eps = np.sqrt(a) * out + np.sqrt(b) * x
        if self.cfg["clip_sample"]:
            r = self.cfg["clip_sample_range"]
            x0 = np.clip(x0, -r, r)
        prev = np.sqrt(ap) * x0 + np.sqrt(F32(1) - ap) * eps
        self.k += 1
        return prev.astype(F32)


class Pndm:
    def __init__(self, cfg, num_steps):
        self.cfg = cfg
        n = cfg["num_train_timesteps"]
        self.abar = make_alphas_cumprod(cfg, False)
        self.final = F32(1.0) if cfg["set_alpha_to_one"] else self.abar[0]
        self.stride = n // num_steps
        asc = np.asarray(spaced(cfg, num_steps, "int"), dtype=np.int64)[::-1]
        if cfg["skip_prk_steps"]:
            self.prk = np.array([], dtype=np.int64)
            plms = np.concatenate([asc[:-1], asc[-2:-1], asc[-1:]])[::-1]
        else:
            prk = np.array(asc[-4:]).repeat(2) + np.tile(np.array([0, n // num_steps // 2]), 4)
            self.prk = prk[:-1].repeat(2)[1:-1][::-1]
            plms = asc[:-3][::-1]
        self.timesteps = np.concatenate([self.prk, plms]).astype(np.int64)
        self.init_noise_sigma = 1.0
        self.counter = 0
        self.ets = []
        self.cur_sample = None
        self.cur_out = 0
        self.k = 0

    def a(self, t):
        return self.abar[t] if t >= 0 else self.final

    def input_scale(self, k):
        return 1.0

    def noise_level(self, k):
        t = self.timesteps[k] if k < len(self.timesteps) else self.timesteps[-1] - self.stride
        a = self.a(t)
        return float(np.sqrt(a)), float(np.sqrt(F32(1) - a))

    def prev_sample(self, x, t, tp, out):
        a, ap = self.a(t), self.a(tp)
        b, bp = F32(1) - a, F32(1) - ap
        if self.cfg["prediction_type"] == "v_prediction":
            out = np.sqrt(a) * out + np.sqrt(b) * x
        coeff = np.sqrt(ap / a)
        denom = a * np.sqrt(bp) + np.sqrt(a * b * ap)
        return (coeff * x - (ap - a) * out / denom).astype(F32)

    def step(self, out, x, noise):
        t = int(self.timesteps[self.k])
        self.k += 1
        if self.counter < len(self.prk):
            return self.step_prk(out, t, x)
        return self.step_plms(out, t, x)

    def step_prk(self, out, t, x):
        c = self.counter
        tp = t - (0 if c % 2 else self.stride // 2)
        t = int(self.prk[c // 4 * 4])
        if c % 4 == 0:
            self.cur_out = self.cur_out + F32(1 / 6) * out
            self.ets.append(out)
            self.cur_sample = x
        elif c % 4 in (1, 2):
            self.cur_out = self.cur_out + F32(1 / 3) * out
        else:
            out = self.cur_out + F32(1 / 6) * out
            self.cur_out = 0
        prev = self.prev_sample(self.cur_sample, t, tp, out)
        self.counter += 1
        return prev

    def step_plms(self, out, t, x):
        tp = t - self.stride
        if self.counter != 1:
            self.ets = self.ets[-3:] + [out]
        else:
            tp, t = t, t + self.stride
        e = self.ets
        if len(e) == 1 and self.counter == 0:
            self.cur_sample = x
        elif len(e) == 1 and self.counter == 1:
            out = (out + e[-1]) / 2
            x, self.cur_sample = self.cur_sample, None
        elif len(e) == 2:
            out = (3 * e[-1] - e[-2]) / 2
        elif len(e) == 3:
            out = (23 * e[-1] - 16 * e[-2] + 5 * e[-3]) / 12
        else:
            out = (1 / 24) * (55 * e[-1] - 59 * e[-2] + 37 * e[-3] - 9 * e[-4])
        prev = self.prev_sample(x, t, tp, out)
        self.counter += 1
        return prev


def f32_log(x):
    # torch's 0-d float32 log: C logf, i.e. the correctly rounded value in practice.
    return F32(math.log(float(x))) if x > 0 else F32(-np.inf)


def f32_exp(x):
    return F32(math.exp(float(x)))


class DpmSolverPP:
    def __init__(self, cfg, num_steps):
        self.cfg = cfg
        n = cfg["num_train_timesteps"]
        abar = make_alphas_cumprod(cfg, True)
        train = sigmas_of(abar)
        sp = cfg["timestep_spacing"]
        if sp == "linspace":
            ts = np.linspace(0, n - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
        elif sp == "leading":
            ratio = n // (num_steps + 1)
            ts = (np.arange(0, num_steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + cfg["steps_offset"]
        else:
            ts = (np.arange(n, 0, -n / num_steps).round() - 1)[:num_steps].astype(np.int64)
        if cfg.get("use_karras_sigmas"):
            flipped = train[::-1]
            lo = cfg.get("sigma_min") or float(flipped[-1])
            hi = cfg.get("sigma_max") or float(flipped[0])
            sig = karras(lo, hi, num_steps)
            t_float = np.array([sigma_to_t(s, np.log(train)) for s in sig])
            ts = (t_float.round() if cfg["beta_schedule"] != "squaredcos_cap_v2" else t_float).astype(np.int64)
        else:
            sig = np.interp(ts, np.arange(len(train)), train.astype(np.float64))
        last = 0.0 if cfg["final_sigmas_type"] == "zero" else float(train[0])
        self.sigmas = np.concatenate([sig, [last]]).astype(F32)
        self.timesteps = ts
        self.init_noise_sigma = 1.0
        self.outputs = [None] * cfg["solver_order"]
        self.lower_order_nums = 0
        self.k = 0

    @staticmethod
    def alpha_sigma(s):
        alpha = F32(1) / np.sqrt(s * s + F32(1))
        return alpha, s * alpha

    @staticmethod
    def lam(s):
        a, sg = DpmSolverPP.alpha_sigma(s)
        return f32_log(a) - f32_log(sg)

    def input_scale(self, k):
        return 1.0

    def noise_level(self, k):
        a, s = self.alpha_sigma(self.sigmas[k])
        return float(a), float(s)

    def step(self, out, x, noise):
        cfg, k, n = self.cfg, self.k, len(self.timesteps)
        final = k == n - 1 and (cfg["euler_at_final"] or (cfg["lower_order_final"] and n < 15)
                                or cfg["final_sigmas_type"] == "zero")
        a_s, s_s = self.alpha_sigma(self.sigmas[k])
        p = cfg["prediction_type"]
        if p == "epsilon":
            x0 = (x - s_s * out) / a_s
        elif p == "v_prediction":
            x0 = a_s * x - s_s * out
        else:
            x0 = out
        x0 = x0.astype(F32)
        self.outputs = self.outputs[1:] + [x0]
        a_t, s_t = self.alpha_sigma(self.sigmas[k + 1])
        with np.errstate(divide="ignore"):
            h = self.lam(self.sigmas[k + 1]) - self.lam(self.sigmas[k])
        em = f32_exp(-h) - F32(1)
        if cfg["solver_order"] == 1 or self.lower_order_nums < 1 or final:
            prev = (s_t / s_s) * x - (a_t * em) * x0
        else:
            m0, m1 = self.outputs[-1], self.outputs[-2]
            h0 = self.lam(self.sigmas[k]) - self.lam(self.sigmas[k - 1])
            r0 = h0 / h
            d1 = (F32(1) / r0) * (m0 - m1)
            if cfg["solver_type"] == "midpoint":
                prev = (s_t / s_s) * x - (a_t * em) * m0 - F32(0.5) * (a_t * em) * d1
            else:
                prev = (s_t / s_s) * x - (a_t * em) * m0 + (a_t * (em / h + F32(1))) * d1
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg["solver_order"])
        self.k += 1
        return prev.astype(F32)


CLASSES = {"euler": Euler, "euler-ancestral": EulerAncestral, "ddim": Ddim, "pndm": Pndm,
           "dpmpp-2m": DpmSolverPP, "lms": Lms}

# ---------------------------------------------------------------------------------------------
# Cases

SD15 = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
        "trained_betas": None, "clip_sample": False}
SD21_V = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
          "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
          "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
SDXL = {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "interpolation_type": "linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False}


def case(name, config, scheduler, steps):
    return {"name": name, "config": config, "scheduler": scheduler, "steps": steps}


CASES = [
    case("euler sd15 50", SD15, "euler", 50),
    case("euler sd15 linspace 30", dict(SD15, timestep_spacing="linspace"), "euler", 30),
    case("euler sd15 trailing 25", dict(SD15, timestep_spacing="trailing"), "euler", 25),
    case("euler sdxl karras 20", dict(SDXL, use_karras_sigmas=True), None, 20),
    case("euler sd21 v_prediction 20", SD21_V, "euler", 20),
    case("euler linear defaults sigma_min final 12", {"_class_name": "EulerDiscreteScheduler",
                                                      "final_sigmas_type": "sigma_min"}, None, 12),
    case("euler squaredcos linspace 10", {"_class_name": "EulerDiscreteScheduler",
                                          "beta_schedule": "squaredcos_cap_v2"}, None, 10),
    case("euler zero-snr v trailing 8", {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085,
                                         "beta_end": 0.012, "beta_schedule": "scaled_linear",
                                         "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                         "timestep_spacing": "trailing"}, None, 8),
    case("euler-ancestral sd15 30", SD15, "euler-ancestral", 30),
    case("euler-ancestral v linspace 10", {"_class_name": "EulerAncestralDiscreteScheduler",
                                           "prediction_type": "v_prediction"}, None, 10),
    case("ddim sd15 50", SD15, "ddim", 50),
    case("ddim sd21 v_prediction 25", SD21_V, None, 25),
    case("ddim defaults clip linspace 10", {"_class_name": "DDIMScheduler", "timestep_spacing": "linspace",
                                            "clip_sample_range": 0.5}, None, 10),
    case("ddim trailing 16 sample prediction", {"_class_name": "DDIMScheduler", "timestep_spacing": "trailing",
                                                "prediction_type": "sample", "clip_sample": False}, None, 16),
    case("ddim squaredcos 20", {"_class_name": "DDIMScheduler", "beta_schedule": "squaredcos_cap_v2",
                                "clip_sample": False}, None, 20),
    case("pndm sd15 50", SD15, None, 50),
    case("pndm sd15 7", SD15, None, 7),
    case("pndm prk linear 10", {"_class_name": "PNDMScheduler"}, None, 10),
    case("pndm sd21 v_prediction 20", SD21_V, "pndm", 20),
    case("dpmpp-2m sd15 25", SD15, "dpmpp-2m", 25),
    case("dpmpp-2m sd15 linspace 10", dict(SD15, timestep_spacing="linspace"), "dpmpp-2m", 10),
    case("dpmpp-2m sdxl karras 20", dict(SDXL, use_karras_sigmas=True), "dpmpp-2m", 20),
    case("dpmpp-2m sd21 v trailing 20", dict(SD21_V, timestep_spacing="trailing"), "dpmpp-2m", 20),
    case("dpmpp-2m heun sigma_min 16", {"_class_name": "DPMSolverMultistepScheduler", "solver_type": "heun",
                                        "final_sigmas_type": "sigma_min", "beta_start": 0.00085, "beta_end": 0.012,
                                        "beta_schedule": "scaled_linear"}, None, 16),
    case("lms sd15 30", SD15, "lms", 30),
    case("lms karras 15", {"_class_name": "LMSDiscreteScheduler", "use_karras_sigmas": True,
                           "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}, None, 15),
]


def inputs():
    """Fixed float32 inputs: initial unit noise, two base arrays mixed per step for the model output,
    and two more for the ancestral noise."""
    i = np.arange(N_ELEM, dtype=np.float64)
    base = {
        "x": np.sin(0.7 * i + 0.3) * 1.1 + 0.2 * np.cos(2.3 * i),
        "a": np.sin(0.37 * i + 1.0),
        "b": np.cos(0.91 * i) * 0.6 + 0.1,
        "c": np.sin(1.7 * i + 0.5),
        "d": np.cos(0.23 * i - 0.4),
    }
    return {k: v.astype(F32) for k, v in base.items()}


def mix(p, q, k):
    """Per-step mixture p * cos(0.3 k) + q * sin(0.5 k) * 0.5, weights float64, result float32."""
    w1, w2 = math.cos(0.3 * k), math.sin(0.5 * k) * 0.5
    return (p.astype(np.float64) * w1 + q.astype(np.float64) * w2).astype(F32), [w1, w2]


def record_steps(total):
    keep = {0, 1, 2, 3, total // 2, total - 2, total - 1}
    return sorted(k for k in keep if 0 <= k < total)


def run_case(c, base):
    name = c["scheduler"] or {v: k for k, v in NAME_TO_CLASS.items()}[c["config"]["_class_name"]]
    cfg = effective_config(c["config"], NAME_TO_CLASS[name])
    s = CLASSES[name](cfg, c["steps"])
    total = len(s.timesteps)
    x = (base["x"] * F32(s.init_noise_sigma)).astype(F32)
    out = {
        "name": c["name"], "config": c["config"], "scheduler": c["scheduler"], "resolvedName": name,
        "steps": c["steps"], "numSteps": total,
        "timesteps": [float(t) for t in s.timesteps],
        "initNoiseSigma": float(s.init_noise_sigma),
        "inputScales": [s.input_scale(k) for k in range(total)],
        "noiseLevels": [list(s.noise_level(k)) for k in range(total + 1)],
        "initialSample": [float(v) for v in x],
        "outputWeights": [], "noiseWeights": [], "samples": {},
    }
    if hasattr(s, "sigmas"):
        out["sigmas"] = [float(v) for v in s.sigmas]
    keep = record_steps(total)
    for k in range(total):
        model_out, w = mix(base["a"], base["b"], k)
        noise, nw = mix(base["c"], base["d"], k + 100)
        out["outputWeights"].append(w)
        out["noiseWeights"].append(nw)
        x = s.step(model_out, x, noise)
        if k in keep:
            out["samples"][str(k)] = [float(v) for v in x]
    return out


def check_torch():
    import torch
    for label, cfg in [("sd15", effective_config(SD15, "EulerDiscreteScheduler")),
                       ("linear", DEFAULTS["EulerDiscreteScheduler"]),
                       ("cosine", dict(DEFAULTS["EulerDiscreteScheduler"], beta_schedule="squaredcos_cap_v2"))]:
        n = cfg["num_train_timesteps"]
        if cfg["beta_schedule"] == "linear":
            tb = torch.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=torch.float32)
        elif cfg["beta_schedule"] == "scaled_linear":
            tb = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=torch.float32) ** 2
        else:
            tb = torch.tensor(make_betas(cfg).astype(np.float64).tolist(), dtype=torch.float32)
        tab = torch.cumprod(1.0 - tb, dim=0)
        tsig = ((1 - tab) / tab) ** 0.5
        ab = make_alphas_cumprod(cfg, False)
        rel = lambda a, b: float(np.max(np.abs(a.astype(np.float64) / b.astype(np.float64) - 1)))
        print(f"{label}: alphas_cumprod max rel diff vs torch {rel(ab, tab.numpy()):.2e}, "
              f"sigmas {rel(sigmas_of(ab), tsig.numpy()):.2e}")
        # DPM-Solver's float32 scalar chain (alpha, sigma, lambda) at every training sigma. torch's
        # float32 log differs from the correctly rounded one by an ulp now and then, so this reports
        # the absolute lambda difference.
        worst = 0.0
        for s in tsig.numpy():
            ts = torch.tensor(s, dtype=torch.float32)
            ta = 1 / ((ts ** 2 + 1) ** 0.5)
            tl = (torch.log(ta) - torch.log(ts * ta)).item()
            worst = max(worst, abs(float(DpmSolverPP.lam(F32(s))) - tl))
        print(f"{label}: DPM lambda float32 chain max abs diff vs torch {worst:.2e}")


def main():
    if "--check-torch" in sys.argv:
        check_torch()
        return
    base = inputs()
    data = {
        "source": "scripts/reference/schedulers_reference.py (NumPy re-implementation of diffusers' schedulers)",
        "elements": N_ELEM,
        "inputs": {k: [float(v) for v in arr] for k, arr in base.items()},
        "cases": [run_case(c, base) for c in CASES],
    }
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "test", "reference", "schedulers-cases.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(data['cases'])} cases")


if __name__ == "__main__":
    main()
