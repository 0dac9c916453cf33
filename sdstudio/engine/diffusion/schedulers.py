"""Sampler choice: our ``Scheduler`` names -> diffusers scheduler objects.

Each run builds a fresh scheduler from the model's original scheduler config, so switching
samplers never accumulates settings and no state leaks between runs.
"""

from __future__ import annotations

from sdstudio.core.request import Scheduler


def make_scheduler(kind: Scheduler, base_config):
    import diffusers

    classes = {
        Scheduler.EULER_A: (diffusers.EulerAncestralDiscreteScheduler, {}),
        Scheduler.EULER: (diffusers.EulerDiscreteScheduler, {}),
        Scheduler.DPMPP_2M: (
            diffusers.DPMSolverMultistepScheduler,
            {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
        ),
        Scheduler.DPMPP_2M_KARRAS: (
            diffusers.DPMSolverMultistepScheduler,
            {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
        ),
        Scheduler.DDIM: (diffusers.DDIMScheduler, {}),
        Scheduler.UNIPC: (diffusers.UniPCMultistepScheduler, {}),
        Scheduler.LCM: (diffusers.LCMScheduler, {}),
        Scheduler.TCD: (diffusers.TCDScheduler, {}),
        Scheduler.EULER_TRAILING: (
            diffusers.EulerDiscreteScheduler,
            {"timestep_spacing": "trailing"},
        ),
        Scheduler.EULER_A_TRAILING: (
            diffusers.EulerAncestralDiscreteScheduler,
            {"timestep_spacing": "trailing"},
        ),
    }
    cls, overrides = classes[kind]
    return cls.from_config(base_config, **overrides)
