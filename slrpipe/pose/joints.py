"""The joint layout: the one place that says which keypoints slrpipe uses and how they connect.

slrpipe works on 49 joints per frame (METHOD.md section 1):

    0..6    trunk: nose, left shoulder, left elbow, left wrist, right shoulder, right elbow, right wrist
    7..27   left hand (21 joints)
    28..48  right hand (21 joints)

Hands follow the 21-point convention shared by COCO-WholeBody and MediaPipe: wrist, then
thumb, index, middle, ring and little finger, four joints each from the base outwards.
"""

from __future__ import annotations

import numpy as np

NUM_TRUNK = 7
NUM_HAND = 21
NUM_JOINTS = NUM_TRUNK + 2 * NUM_HAND  # 49

TRUNK = slice(0, NUM_TRUNK)
LEFT_HAND = slice(NUM_TRUNK, NUM_TRUNK + NUM_HAND)
RIGHT_HAND = slice(NUM_TRUNK + NUM_HAND, NUM_JOINTS)

TRUNK_NAMES = (
    "nose",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
)
# Trunk positions of the joints the hand crop falls back on (METHOD.md section 2).
LEFT_ELBOW, LEFT_WRIST = 2, 3
RIGHT_ELBOW, RIGHT_WRIST = 5, 6

# --- COCO-WholeBody (133 points: body 0-16, feet 17-22, face 23-90, left hand 91-111, right hand 112-132)
WHOLEBODY_NUM_POINTS = 133
WHOLEBODY_TRUNK = (0, 5, 7, 9, 6, 8, 10)
WHOLEBODY_LEFT_HAND_START = 91
WHOLEBODY_RIGHT_HAND_START = 112
WHOLEBODY_TO_49 = np.array(
    WHOLEBODY_TRUNK
    + tuple(range(WHOLEBODY_LEFT_HAND_START, WHOLEBODY_LEFT_HAND_START + NUM_HAND))
    + tuple(range(WHOLEBODY_RIGHT_HAND_START, WHOLEBODY_RIGHT_HAND_START + NUM_HAND)),
    dtype=np.int64,
)

# --- MediaPipe Holistic (pose 33 landmarks x (x, y, z, visibility); each hand 21 x (x, y, z))
MEDIAPIPE_POSE_POINTS = 33
MEDIAPIPE_TRUNK = (0, 11, 13, 15, 12, 14, 16)
MEDIAPIPE_POSE_VALUES = MEDIAPIPE_POSE_POINTS * 4  # 132
MEDIAPIPE_FACE_VALUES = 468 * 3  # 1404
MEDIAPIPE_HAND_VALUES = NUM_HAND * 3  # 63
# Frame vector sizes of the common "MP_Data" recordings: pose + left hand + right hand, with or without face.
MEDIAPIPE_VECTOR_NO_FACE = MEDIAPIPE_POSE_VALUES + 2 * MEDIAPIPE_HAND_VALUES  # 258
MEDIAPIPE_VECTOR_WITH_FACE = MEDIAPIPE_POSE_VALUES + MEDIAPIPE_FACE_VALUES + 2 * MEDIAPIPE_HAND_VALUES  # 1662

# --- Graphs (used by the encoders and by `slrpipe show`)
HAND_FINGERS = tuple(tuple(range(1 + 4 * finger, 5 + 4 * finger)) for finger in range(5))
HAND_EDGES = tuple(
    edge
    for finger in HAND_FINGERS
    for edge in ((0, finger[0]),) + tuple(zip(finger[:-1], finger[1:]))
)
# Parts pooled by the hand GCN: the five fingers and the palm (wrist plus finger bases).
HAND_PARTS = HAND_FINGERS + ((0,) + tuple(finger[0] for finger in HAND_FINGERS),)

# The authors' code's hand parts (METHOD.md section 9): fingers of their outer three joints
# (thumb 2, 3, 4, ...) and a palm of the wrist and the five finger bases (0, 1, 5, 9, 13, 17).
HAND_PARTS_THREE_JOINT = tuple(finger[1:] for finger in HAND_FINGERS) + (HAND_PARTS[-1],)
HAND_PART_LAYOUTS = {"four_joint_fingers": HAND_PARTS, "three_joint_fingers": HAND_PARTS_THREE_JOINT}

TRUNK_EDGES = ((0, 1), (0, 4), (1, 2), (2, 3), (4, 5), (5, 6))
TRUNK_PARTS = ((1, 2, 3), (4, 5, 6), (0,))  # left arm, right arm, nose

# Graphs over the parts themselves (the second GCN stage pools joints into parts first).
HAND_PART_EDGES = tuple((5, finger) for finger in range(5))  # palm to every finger
TRUNK_PART_EDGES = ((2, 0), (2, 1))  # nose to each arm

# For the ST-GCN-style blocks (model.gcn_block: stgcn): each graph's centre, from which the
# partition into root / closer / further / symmetric kernels measures hop distances, and
# "symmetric" edges between joints equally far from it: the knuckle line of the palm
# (index-middle-ring-little bases, as in MediaPipe's hand graph) and the shoulders; between
# neighbouring fingers on the part graph. The authors' graphs have such edges (METHOD.md
# section 9) but which joints they join is not recorded; these are ours.
HAND_CENTRE, TRUNK_CENTRE = 0, 0  # wrist, nose
HAND_PART_CENTRE, TRUNK_PART_CENTRE = 5, 2  # palm, nose
HAND_SYMMETRIC_EDGES = ((5, 9), (9, 13), (13, 17))
TRUNK_SYMMETRIC_EDGES = ((1, 4),)
HAND_PART_SYMMETRIC_EDGES = ((1, 2), (2, 3), (3, 4))
TRUNK_PART_SYMMETRIC_EDGES = ((0, 1),)
