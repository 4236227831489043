"""torch.compile for the training encoders (`model.compile`).

Modules are compiled in place (`nn.Module.compile`), not wrapped (`torch.compile(module)`), so
their state_dict keys stay what they are: checkpoints and model files carry no `_orig_mod.`
prefix and load into an uncompiled model (the evaluate stage, `slrpipe predict`, a run with
compile off).

What recompiles: the first call compiles with static shapes; the first call with another batch
size (the last batch of an epoch, a validation batch) recompiles once with the batch dimension
dynamic, and no batch size after that recompiles. Gradient mode and train/eval mode each add a
graph (the key encoders run without gradients, validation in eval mode). Masks are values, not
shapes, so which frames and joints are valid never recompiles; nor do the banks, which stay
outside the compiled modules (tests/test_compile.py counts the compilations).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from torch import nn

log = logging.getLogger(__name__)

# Inductor generates fused kernels (Triton on a GPU, C++ on a CPU). The tests swap in "eager" or
# "aot_eager", which trace exactly as inductor does but generate no code, to stay fast.
BACKEND = "inductor"


def compile_in_place(modules: Iterable[nn.Module], enabled: bool) -> None:
    """torch.compile each module in place when `enabled`; nothing otherwise."""
    if not enabled:
        return
    modules = list(modules)
    for module in modules:
        module.compile(backend=BACKEND)
    log.info("torch.compile (%s) on %d modules: the first steps are slow while they compile", BACKEND, len(modules))
