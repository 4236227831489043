"""The optimised per-frame GCN against a straightforward computation, and the encoder block
forms of params.yaml's `model:` (paper's / ours by default, the authors' code's as options)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from slrpipe.config import ModelParams, load_params
from slrpipe.errors import ParamsError
from slrpipe.model.encoder import SignEncoder
from slrpipe.model.gcn import Graph, PartGCN, PartPool, group_max, STGCNBlock, hop_distances, normalized_adjacency, partitioned_adjacency
from slrpipe.pose import joints
from slrpipe.pretrain.model import Branch

REPO = Path(__file__).resolve().parents[1]
MODEL = load_params(REPO / "params.yaml").model
AUTHORS_PARAMETERS = 50.25e6
OFFICIAL = {"gcn_block": "stgcn", "temporal_block": "multiscale", "transformer": "post_norm", "init": "xavier",
            "hand_parts": "three_joint_fingers"}
JOINTS = {"right_hand": 21, "left_hand": 21, "trunk": 7}


def size_of(name: str, **form):
    return MODEL.model_copy(update={"size": name, **form}).chosen


def random_view(batch: int, frames: int) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(0)
    coords = {part: torch.rand(batch, frames, v, 2, generator=generator) for part, v in JOINTS.items()}
    masks = {part: torch.ones(batch, frames, v, dtype=torch.bool) for part, v in JOINTS.items()}
    return coords, masks


# --- the optimised plain GCN equals the straightforward one

TINY_EDGES = ((0, 1), (1, 2), (1, 3))
TINY_PARTS = ((0, 1), (2,), (1, 2, 3))
TINY_PART_EDGES = ((0, 1), (0, 2))


def reference_part_gcn(gcn: PartGCN, coords: torch.Tensor) -> torch.Tensor:
    """The same network written out on (N, V, C) with a hand-written adjacency, one part at a time."""
    def layer(conv, adjacency, x):
        mixed = torch.einsum("uv,nvc->nuc", adjacency, x @ conv.linear.weight.t() + conv.linear.bias)
        flat = mixed.reshape(-1, mixed.shape[-1])
        normed = F.batch_norm(flat, None, None, conv.norm.weight, conv.norm.bias, training=True, eps=conv.norm.eps)
        return torch.relu(normed).view_as(mixed)

    # A_hat of the tiny graphs by hand: degrees (with self-loops) 2, 4, 2, 2 and 3, 2, 2.
    joint_degree = torch.tensor([2.0, 4.0, 2.0, 2.0], dtype=coords.dtype)
    joint_a = torch.eye(4, dtype=coords.dtype)
    for a, b in TINY_EDGES:
        joint_a[a, b] = joint_a[b, a] = 1.0
    joint_a = joint_a / torch.outer(joint_degree, joint_degree).sqrt()
    part_degree = torch.tensor([3.0, 2.0, 2.0], dtype=coords.dtype)
    part_a = torch.eye(3, dtype=coords.dtype)
    for a, b in TINY_PART_EDGES:
        part_a[a, b] = part_a[b, a] = 1.0
    part_a = part_a / torch.outer(part_degree, part_degree).sqrt()
    x = coords
    for conv in gcn.joint_layers:
        x = layer(conv, joint_a, x)
    x = torch.stack([x[:, list(members)].amax(dim=1) for members in TINY_PARTS], dim=1)
    for conv in gcn.part_layers:
        x = layer(conv, part_a, x)
    return x.amax(dim=1)


def test_the_node_major_gcn_equals_a_straightforward_computation_with_its_gradients():
    torch.manual_seed(0)
    gcn = PartGCN(Graph(4, TINY_EDGES), Graph(3, TINY_PART_EDGES), TINY_PARTS, (5, 3, 6), (7, 4)).double()
    coords = torch.randn(9, 4, 2, dtype=torch.float64)
    ours = gcn(coords)
    ours_grads = torch.autograd.grad(ours.pow(2).sum(), list(gcn.parameters()))
    reference = reference_part_gcn(gcn, coords)
    reference_grads = torch.autograd.grad(reference.pow(2).sum(), list(gcn.parameters()))
    # The module's adjacency is computed in float32 (then cast): agreement to float32 precision.
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(ours_grads, reference_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the key encoders' path, without gathering the winners
        torch.testing.assert_close(gcn(coords), reference.detach(), rtol=1e-5, atol=1e-6)


def test_part_pooling_takes_each_parts_maximum_and_sends_the_gradient_to_the_winning_joint():
    pool = PartPool(((0, 2), (1,), (2, 3, 0)))
    x = torch.tensor([[[1.0]], [[5.0]], [[3.0]], [[4.0]]], requires_grad=True)  # (V 4, N 1, C 1)
    pooled = pool(x)
    assert pooled.flatten().tolist() == [3.0, 5.0, 4.0]
    pooled.sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 1.0, 1.0, 1.0]


def test_group_max_matches_torch_max_with_ties_and_overlapping_groups():
    """Values and gradient equal torch.max over each group's rows, whose gradient goes to the
    first maximal member: checked on small integers, where ties are everywhere, with groups that
    share joints (as the palm shares the finger bases), and with gradcheck on continuous data."""
    groups = ((1, 2, 3, 4), (0, 1, 5), (5,), (2, 0, 4))
    torch.manual_seed(0)
    x = torch.randint(0, 3, (6, 7, 5)).double().requires_grad_()
    weights = torch.randn(len(groups), 7, 5, dtype=torch.float64)
    ours = group_max(x, groups)
    (ours * weights).sum().backward()
    ours_grad, x.grad = x.grad, None
    reference = torch.stack([x[list(members)].max(dim=0).values for members in groups])
    (reference * weights).sum().backward()
    assert torch.equal(ours, reference)
    assert torch.equal(ours_grad, x.grad)
    assert (x.detach()[1] == x.detach()[2]).any()  # the data does tie
    continuous = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: group_max(t, groups), (continuous,))
    with torch.no_grad():
        assert torch.equal(group_max(x, groups), reference)


def test_the_encoders_parameter_names_and_shapes_are_those_of_earlier_checkpoints():
    """Checkpoints written before the GCN was reorganised still load: same names, same shapes."""
    gcn = SignEncoder(MODEL.chosen).state_dict()
    expected = {"hand_gcn.joint_layers.0.linear.weight": (32, 2), "hand_gcn.joint_layers.2.linear.weight": (64, 32),
                "hand_gcn.joint_layers.2.norm.running_var": (64,), "hand_gcn.part_layers.0.linear.weight": (128, 64),
                "hand_gcn.part_layers.1.norm.weight": (128,), "trunk_gcn.part_layers.1.linear.bias": (128,),
                "hand_time.position": (1, 512, 256), "hand_time.temporal.0.conv.weight": (256, 256, 5)}
    assert {key: tuple(gcn[key].shape) for key in expected} == expected
    assert sorted(key for key in gcn if "_gcn." in key) == sorted(
        f"{part}_gcn.{stage}_layers.{i}.{name}" for part in ("hand", "trunk") for stage, layers in (("joint", 3), ("part", 2))
        for i in range(layers) for name in ("linear.weight", "linear.bias", "norm.weight", "norm.bias", "norm.running_mean",
                                            "norm.running_var", "norm.num_batches_tracked"))


# --- the forms

def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize("form", [{}, OFFICIAL], ids=["paper", "authors"])
def test_the_paper_size_stays_within_10_percent_of_the_authors_parameter_count(form):
    with torch.device("meta"):
        branch = Branch(size_of("paper", **form), ("hand", "trunk"), global_head=False)
    total = count(branch)
    assert abs(total - AUTHORS_PARAMETERS) / AUTHORS_PARAMETERS < 0.10
    assert round(total / 1e6, 2) == (49.06 if not form else 47.94)


@pytest.mark.parametrize("key,value", [("gcn_block", "stgcn"), ("temporal_block", "multiscale"), ("transformer", "post_norm"),
                                       ("init", "xavier"), ("hand_parts", "three_joint_fingers"), ("all", None)])
def test_each_form_gives_features_of_the_width_and_trains(key, value):
    size = size_of("small", **(OFFICIAL if key == "all" else {key: value}))
    torch.manual_seed(0)
    encoder = SignEncoder(size)
    coords, masks = random_view(batch=3, frames=8)
    features = encoder(coords, masks)
    assert all(f.shape == (3, size.width) and torch.isfinite(f).all() for f in features.values())
    sum(f.sum() for f in features.values()).backward()
    assert all(p.grad is not None for p in encoder.parameters())  # DDP needs every parameter used
    encoder.eval()
    assert all(torch.isfinite(f).all() for f in encoder(coords, masks).values())


def test_xavier_initialises_every_matrix_within_xavier_bounds():
    def bounds_hold(encoder):
        for parameter in encoder.parameters():
            if parameter.dim() >= 2:
                fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(parameter)
                if parameter.abs().max() > math.sqrt(6.0 / (fan_in + fan_out)) + 1e-6:
                    return False
        return True

    torch.manual_seed(0)
    assert bounds_hold(SignEncoder(size_of("small", init="xavier")))
    # PyTorch's default gives the 2 -> 32 input layer weights up to 1 / sqrt(2), beyond xavier's sqrt(6 / 34).
    assert not bounds_hold(SignEncoder(size_of("small")))
    with torch.device("meta"):
        heads = Branch(size_of("small", init="xavier"), ("hand",), global_head=False).heads
    assert heads["hand"][0].weight.device.type == "meta"  # built; the bounds of real ones:
    torch.manual_seed(0)
    assert bounds_hold(Branch(size_of("small", init="xavier"), ("hand",), global_head=False).heads)


def test_post_norm_transformer_has_no_positions_and_normalises_each_layers_output():
    torch.manual_seed(0)
    pre = SignEncoder(size_of("small")).trunk_time
    post = SignEncoder(size_of("small", transformer="post_norm")).trunk_time
    assert pre.position is not None and post.position is None and post.input_norm is not None
    layer = post.transformer.layers[0]
    assert not layer.norm_first and layer.activation is F.gelu
    tokens = torch.randn(2, 5, 128) * 3 + 1
    layer.eval()
    every_token = torch.ones(2, 5, dtype=torch.bool)
    out = layer(tokens, every_token)
    # Post-norm: the layer's output is its last LayerNorm's (weight 1, bias 0 at init).
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0)
    pre_layer = pre.transformer.layers[0].eval()
    assert pre_layer.norm_first and (pre_layer(tokens, every_token).mean(-1).abs() > 0.1).any()


def test_multiscale_temporal_blocks_are_shared_between_the_hands_and_not_residual():
    torch.manual_seed(0)
    size = size_of("small", temporal_block="multiscale")
    temporal = SignEncoder(size).hand_time.temporal.eval()
    width = size.width
    # One set of weights on the feature width (not on right || left): conv k5, two convs k3, 1x1, BN.
    assert count(temporal) == size.temporal_blocks * (13 * width * width + 4 * width + 2 * width)
    right, left = torch.randn(2, 7, width), torch.randn(2, 7, width)
    both = temporal(torch.cat([right, left], dim=-1))
    swapped = temporal(torch.cat([left, right], dim=-1))
    torch.testing.assert_close(both[..., :width], swapped[..., width:])
    torch.testing.assert_close(both[..., width:], swapped[..., :width])
    assert (both >= 0).all()  # ends in a ReLU: no residual added after it


def test_partitioned_kernels_sum_to_the_normalized_adjacency_with_symmetric_edges():
    graph = Graph(joints.NUM_HAND, joints.HAND_EDGES, joints.HAND_SYMMETRIC_EDGES, joints.HAND_CENTRE)
    kernels = partitioned_adjacency(graph)
    assert kernels.shape == (4, 21, 21)
    torch.testing.assert_close(kernels.sum(0), normalized_adjacency(21, graph.edges + graph.symmetric_edges))
    root, closer, further, symmetric = kernels
    torch.testing.assert_close(root, torch.diag(torch.diagonal(kernels.sum(0))))
    hops = hop_distances(graph)
    assert hops[0] == 0 and hops[4] == 4 and hops[5] == 1
    assert closer[2, 1] > 0 and closer[1, 2] == 0 and further[1, 2] > 0  # 1 is nearer the wrist than 2
    assert symmetric[5, 9] > 0 and symmetric[9, 5] > 0 and symmetric.count_nonzero() == 6  # the knuckle line, both ways
    for part_graph in (Graph(6, joints.HAND_PART_EDGES, joints.HAND_PART_SYMMETRIC_EDGES, joints.HAND_PART_CENTRE),
                       Graph(7, joints.TRUNK_EDGES, joints.TRUNK_SYMMETRIC_EDGES, joints.TRUNK_CENTRE),
                       Graph(3, joints.TRUNK_PART_EDGES, joints.TRUNK_PART_SYMMETRIC_EDGES, joints.TRUNK_PART_CENTRE)):
        assert len(partitioned_adjacency(part_graph)) == 4


def test_stgcn_block_equals_its_written_out_form():
    """sum_k A_k (x W_k + b_k) -> BN -> ReLU -> Dropout -> 1x1 -> BN, + the residual's 1x1 + BN, -> ReLU."""
    torch.manual_seed(0)
    kernels = partitioned_adjacency(Graph(4, TINY_EDGES, ((0, 2),), 1)).double()
    block = STGCNBlock(kernels, 3, 5, dropout=0.0, residual=True).double().eval()
    for module in block.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    x = torch.randn(4, 6, 3, dtype=torch.float64)  # (V, N, C)

    def bn(module, y):
        return F.batch_norm(y, module.running_mean, module.running_var, module.weight, module.bias, False, 0.0, module.eps)

    weights, biases = block.linear.weight.view(len(kernels), 5, 3), block.linear.bias.view(len(kernels), 5)
    graph = sum(torch.einsum("uv,vnc->unc", kernels[k], x @ weights[k].t() + biases[k]) for k in range(len(kernels)))
    y = bn(block.pointwise_norm, torch.relu(bn(block.norm, graph.reshape(24, 5))) @ block.pointwise.weight.t() + block.pointwise.bias)
    residual = bn(block.residual[1], x.reshape(24, 3) @ block.residual[0].weight.t() + block.residual[0].bias)
    torch.testing.assert_close(block(x), torch.relu(y + residual).view(4, 6, 5))


def test_stgcn_gcn_normalises_the_input_coordinates_and_projects_after_pooling():
    gcn = SignEncoder(size_of("small", gcn_block="stgcn")).hand_gcn
    assert gcn.input_norm.num_features == 21 * 2
    assert isinstance(gcn.pool_projection[0], torch.nn.Linear) and gcn.pool_projection[3].p == 0.25
    assert gcn.joint_layers[0].residual is None and not gcn.joint_layers[0].identity  # the first block has none
    assert gcn.joint_layers[1].identity


def test_the_authors_hand_parts_are_three_joint_fingers_and_the_palm():
    assert joints.HAND_PART_LAYOUTS["three_joint_fingers"] == (
        (2, 3, 4), (6, 7, 8), (10, 11, 12), (14, 15, 16), (18, 19, 20), (0, 1, 5, 9, 13, 17))
    assert joints.HAND_PART_LAYOUTS["four_joint_fingers"][0] == (1, 2, 3, 4)
    assert SignEncoder(size_of("small", hand_parts="three_joint_fingers")).hand_gcn.pool.parts[0] == (2, 3, 4)


# --- configuration

def test_the_forms_are_model_keys_carried_by_the_chosen_size():
    model = ModelParams.model_validate({**MODEL.model_dump(), **OFFICIAL})
    assert model.chosen.form.model_dump() == OFFICIAL
    assert MODEL.chosen.form.gcn_block == "plain" and MODEL.chosen.form.init == "torch"


def test_a_bad_form_or_a_form_inside_a_size_is_refused(tmp_path):
    text = (REPO / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("  gcn_block: plain", "  gcn_block: fancy"))
    with pytest.raises(ParamsError, match="model.gcn_block"):
        load_params(bad)
    bad.write_text(text.replace("      head_dim: 128\n\n", "      head_dim: 128\n      form: {init: xavier}\n\n", 1))
    with pytest.raises(ParamsError, match="not per size"):
        load_params(bad)
