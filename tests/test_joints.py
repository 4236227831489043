"""The 49-joint layout checked joint by joint against METHOD.md section 1."""

import numpy as np

from slrpipe.pose import joints


def test_wholebody_selection_joint_by_joint():
    expected = [0, 5, 7, 9, 6, 8, 10] + list(range(91, 112)) + list(range(112, 133))
    assert joints.WHOLEBODY_TO_49.tolist() == expected
    assert joints.NUM_JOINTS == 49
    assert list(range(49))[joints.TRUNK] == list(range(0, 7))
    assert list(range(49))[joints.LEFT_HAND] == list(range(7, 28))
    assert list(range(49))[joints.RIGHT_HAND] == list(range(28, 49))
    assert joints.TRUNK_NAMES[joints.LEFT_WRIST] == "left_wrist"
    assert joints.TRUNK_NAMES[joints.RIGHT_ELBOW] == "right_elbow"


def test_mediapipe_trunk_matches_coco_trunk_meaning():
    # nose, L shoulder, L elbow, L wrist, R shoulder, R elbow, R wrist in each convention
    assert joints.MEDIAPIPE_TRUNK == (0, 11, 13, 15, 12, 14, 16)
    assert joints.WHOLEBODY_TRUNK == (0, 5, 7, 9, 6, 8, 10)
    assert joints.MEDIAPIPE_VECTOR_NO_FACE == 258
    assert joints.MEDIAPIPE_VECTOR_WITH_FACE == 1662


def test_graphs_are_connected_trees_and_parts_cover_joints():
    for count, edges in ((joints.NUM_HAND, joints.HAND_EDGES), (joints.NUM_TRUNK, joints.TRUNK_EDGES)):
        assert len(edges) == count - 1
        reached, frontier = {0}, [0]
        while frontier:
            node = frontier.pop()
            for a, b in edges:
                for here, there in ((a, b), (b, a)):
                    if here == node and there not in reached:
                        reached.add(there)
                        frontier.append(there)
        assert reached == set(range(count))
    assert set(np.concatenate([list(p) for p in joints.HAND_PARTS])) == set(range(21))
    assert set(np.concatenate([list(p) for p in joints.TRUNK_PARTS])) == set(range(7))
    assert len(joints.HAND_PARTS) == 6 and len(joints.TRUNK_PARTS) == 3
