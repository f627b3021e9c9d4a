"""SD's training noise schedule and a DDIM sampler over it (used by train.py checks and sample.py)."""
import torch

NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012


def alphas_cumprod(device='cpu'):
    """'scaled_linear' betas as in Stable Diffusion: linspace of sqrt(beta), squared."""
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(device=device, dtype=torch.float32)


def leading_timesteps(steps, steps_offset=1):
    """diffusers' 'leading' spacing with steps_offset 1: 961, 928, ..., 1 for 30 steps."""
    ratio = NUM_TRAIN_TIMESTEPS // steps
    return [i * ratio + steps_offset for i in reversed(range(steps))]


@torch.no_grad()
def ddim_sample(eps_fn, latents, steps):
    """Deterministic DDIM (eta 0, set_alpha_to_one False). eps_fn(x, t_int) -> predicted noise."""
    acp = alphas_cumprod(latents.device)
    ts = leading_timesteps(steps)
    x = latents
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else -1
        a_t = acp[t]
        a_prev = acp[prev] if prev >= 0 else acp[0]
        eps = eps_fn(x, t)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x
