"""Make ``mmpose`` importable on a CPU-only install (mmcv-lite, no torchvision).

Why this exists: MMPose and MMDetection import compiled ``mmcv.ops`` kernels and
``torchvision`` at module level in files that RTMPose/RTMW top-down inference never runs
(EDPose, DEKR, RTMO heads, deformable DETR layers, a SimCC visualizer). PyPI ships
``mmcv.ops`` compiled only in the CUDA ``mmcv`` builds and ``torchvision`` only as a CUDA
build that replaces the CPU torch. So on a CPU install ``import mmpose.apis`` fails although
nothing we call needs those kernels.

The shim registers stand-in modules in ``sys.modules`` that provide exactly the names those
files import. It is applied only when the real module cannot be imported: a user with a
working CUDA ``mmcv`` and ``torchvision`` gets the real ones. A stand-in raises
:class:`MissingDependencyError` when anything actually calls or instantiates it, so a model
that does need a compiled op (e.g. a detector's NMS) fails with a clear message instead of
running wrong.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import types

from slrpipe.errors import MissingDependencyError

log = logging.getLogger(__name__)

INSTALL_HINT = "python -m slrpipe.install_extras mmpose"

# Names imported at module level by mmpose 1.3 / mmdet 3.3 when their model, dataset and
# api packages are imported (measured by importing them with recording stand-ins).
_MMCV_OPS_NAMES: dict[str, tuple[str, ...]] = {
    "mmcv.ops": (
        "CornerPool",
        "DeformConv2d",
        "MaskedConv2d",
        "MultiScaleDeformableAttention",
        "RoIPool",
        "batched_nms",
        "deform_conv2d",
        "nms",
        "nms_match",
        "point_sample",
        "rel_roi_point_to_rel_img_point",
        "sigmoid_focal_loss",
    ),
    "mmcv.ops.carafe": ("CARAFEPack",),
    "mmcv.ops.merge_cells": ("ConcatCell", "GlobalPoolingCell", "SumCell"),
    "mmcv.ops.modulated_deform_conv": ("ModulatedDeformConv2d",),
    "mmcv.ops.multi_scale_deform_attn": ("MultiScaleDeformableAttention",),
    "mmcv.ops.nms": ("batched_nms",),
    "mmcv.ops.roi_align": ("roi_align",),
}
_TORCHVISION_NAMES: dict[str, tuple[str, ...]] = {
    "torchvision": (),
    "torchvision.transforms": ("ToPILImage",),
}
STUB_MARKER = "__slrpipe_stub__"


def _stand_in(qualified: str, needs: str) -> type:
    """A class, so it works both as a called function and as a base class at import time."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise MissingDependencyError(f"{qualified} {needs}; RTMPose/RTMW pose models do not use it, this model does")

    return type(qualified.rsplit(".", 1)[-1], (), {"__init__": refuse, "__module__": qualified.rsplit(".", 1)[0]})


def _real_import_fails(name: str) -> bool:
    module = sys.modules.get(name)
    if module is not None and getattr(module, STUB_MARKER, False):
        return False  # our stand-in is already in place
    try:
        importlib.import_module(name)
    # ImportError covers "not installed" and mmcv-lite's missing mmcv._ext; a CUDA torchvision
    # built against another torch fails with RuntimeError or OSError instead.
    except (ImportError, RuntimeError, OSError) as exc:
        log.info("using slrpipe stand-ins for %s (%s)", name, exc)
        return True
    return False


def _install_stubs(table: dict[str, tuple[str, ...]], needs: str) -> None:
    for mod_name, names in table.items():
        module = types.ModuleType(mod_name, f"slrpipe stand-in for {mod_name} (see slrpipe.pose.mmcompat)")
        module.__path__ = []  # a package, so its submodules can be imported
        # A spec keeps importlib.util.find_spec() working on the stand-in.
        module.__spec__ = importlib.machinery.ModuleSpec(mod_name, None, is_package=True)
        setattr(module, STUB_MARKER, True)
        for name in names:
            setattr(module, name, _stand_in(f"{mod_name}.{name}", needs))
        sys.modules[mod_name] = module
        parent, _, child = mod_name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
    # mmcv re-exports this name from mmcv.cnn only if mmcv.ops imported; mmdet imports it from there.
    bricks = sys.modules.get("mmcv.cnn.bricks.transformer")
    if "mmcv.ops" in table and bricks is not None and not hasattr(bricks, "MultiScaleDeformableAttention"):
        bricks.MultiScaleDeformableAttention = sys.modules["mmcv.ops"].MultiScaleDeformableAttention


def ensure_mmpose_importable() -> None:
    """Check that mmpose is installed and patch in stand-ins for missing compiled extras.

    Safe to call many times. Raises MissingDependencyError when mmpose, mmdet, mmcv or mmengine is
    not installed at all.
    """
    # mmdet too: mmpose.models imports it, and RTMPose backbones (CSPNeXt) live there.
    for package in ("mmengine", "mmcv", "mmdet", "mmpose"):
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(f"{package} is not installed; install the MMPose extra with: {INSTALL_HINT}")
    if _real_import_fails("mmcv.ops"):
        _install_stubs(_MMCV_OPS_NAMES, "needs mmcv's compiled ops, which mmcv-lite lacks (install the full mmcv build)")
    if _real_import_fails("torchvision"):
        _install_stubs(_TORCHVISION_NAMES, "needs torchvision, which is not installed")
