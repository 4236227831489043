"""Typed, validated view of params.yaml: read once, checked once.

Every setting of the pipeline lives in params.yaml. `load_params` turns it into frozen
pydantic models; an unknown key or a bad value raises `ParamsError` with one line naming
the key (`params.yaml: extract.batch_size: Input should be greater than 0`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slrpipe.errors import ParamsError

DEFAULT_PARAMS = Path("params.yaml")

# Torch threads of a training process: `auto` = the cores it may use (its share under torchrun)
# minus its loader workers, at least 1 (OMP_NUM_THREADS, when set, wins); or a number.
Threads = Literal["auto"] | Annotated[int, Field(ge=1, strict=True)]

SourceKind = Literal["wlasl", "msasl", "nmfs_csl", "slr500", "video_folder", "mp_data", "mmpose_json", "manifest"]


class Section(BaseModel):
    # Strict: `epochs: true` or `lr: "0.5"` is an error, not 1 and 0.5 (an int is still a valid
    # float). Tuples and paths opt out of strictness themselves, as YAML gives lists and strings.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatasetParams(Section):
    source: SourceKind
    # Folder of the dataset (or, for `manifest`, the CSV file). Relative paths are relative
    # to the directory holding params.yaml, i.e. the project root when run by DVC.
    root: Path = Field(strict=False)
    # WLASL / MS-ASL subsets: keep the N most frequent glosses as the dataset defines them.
    num_classes: int | None = Field(default=None, gt=0)
    # MS-ASL ships no clips, only URLs: where the user's downloaded clips are, relative to root.
    msasl_clip_template: str = "clips/{split}/{index:05d}.mp4"
    # Pose files store no image size: MediaPipe coordinates are normalized and MMPose JSON
    # holds pixels only. Pixel coordinates are scaled to / interpreted in this (width, height).
    frame_size: tuple[int, int] = Field(default=(640, 480), strict=False)
    fps: float = Field(default=30.0, gt=0)
    # false: recordings without glosses (any folder of videos or pose files the source can read;
    # folder names are ignored). They only join the pretraining corpus: every sample is a
    # training sample without a label, never fine-tuned on, evaluated or used by the kNN monitor.
    labelled: bool = True
    # The splits whose samples join the pretraining corpus when this dataset is in
    # pretrain.corpus: train, or train and val (the authors' code for WLASL and MS-ASL,
    # METHOD.md section 9). Never test: a target's test samples stay out of pretraining.
    pretrain_splits: tuple[Literal["train", "val"], ...] = Field(default=("train",), strict=False)

    @field_validator("pretrain_splits")
    @classmethod
    def _some_split(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "train" not in value:
            raise ValueError("must include train")
        return tuple(sorted(set(value), key=("train", "val").index))

    @field_validator("frame_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) <= 0:
            raise ValueError("width and height must be positive")
        return value


class ExtractParams(Section):
    # Video backend, chosen explicitly (never a silent fallback). Pose files need none.
    backend: Literal["mmpose", "mediapipe"] = "mmpose"
    # MMPose config: a file path or a path inside MMPose's bundled configs; checkpoint from `mim download`.
    pose_config: str = "wholebody_2d_keypoint/rtmpose/coco-wholebody/rtmpose-m_8xb64-270e_coco-wholebody-256x192.py"
    pose_checkpoint: Path | None = Field(default=None, strict=False)
    # Optional MMDetection person detector; without it the whole frame is the person box.
    det_config: str | None = None
    det_checkpoint: Path | None = Field(default=None, strict=False)
    det_score_threshold: float = Field(default=0.5, ge=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=16, gt=0)
    # MediaPipe Holistic confidences (model_complexity is fixed at 1: the only model in the wheel).
    mediapipe_min_detection_confidence: float = Field(default=0.5, ge=0, le=1)
    mediapipe_min_tracking_confidence: float = Field(default=0.5, ge=0, le=1)
    # Also store all 133 COCO-WholeBody points (MMPose sources only).
    keep_wholebody: bool = False
    # Fail the stage when more than this fraction of samples are bad.
    max_bad_fraction: float = Field(default=0.1, ge=0, le=1)


class PreprocessParams(Section):
    """Hand/trunk crops and normalization (METHOD.md section 2), splits and label subsets."""

    # Joints scored below this are zeroed and masked.
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    # Joints scored above this define a hand's crop box ...
    crop_score_threshold: float = Field(default=0.1, ge=0, le=1)
    # ... a square of this many times the larger extent of those joints, centred on them ...
    crop_scale: float = Field(default=2.2, gt=0)
    # ... when at least this many are visible; otherwise the box is placed from the forearm:
    crop_min_visible: int = Field(default=10, ge=1, le=21)
    # `ours`: centre = wrist + fallback_center_ratio x (wrist - elbow), side = fallback_side_ratio
    # x |wrist - elbow|, when elbow and wrist pass score_threshold. `official` (authors' code):
    # centre = wrist + 0.33 x (wrist - elbow), side = 1.1 x max(|wrist - elbow|, 0.9 x
    # |elbow - shoulder|), only when shoulder, elbow and wrist score >= 0.8 and the wrist is at
    # least 50 px above the image's bottom edge.
    fallback_box: Literal["ours", "official"] = "ours"
    fallback_center_ratio: float = 0.4
    fallback_side_ratio: float = Field(default=1.2, gt=0)
    # Move each hand box into the image, its side capped at min(width, height) - 1 (authors' code:
    # true; ours: false, a box may reach past the frame's edge).
    clamp_box: bool = False
    # Set each hand coordinate that falls outside its box (below 0 or above 1 of the crop) to 0
    # (authors' code: true; ours: false, a joint outside the box keeps its position beyond [0, 1]).
    zero_outside_box: bool = False
    # Crop resolution; coordinates are mapped into it and divided by it, so they lie in [0, 1].
    crop_size: int = Field(default=256, gt=0)
    # Mirror the left hand (x -> 1 - x) so both hands look like right hands to the shared
    # hand encoder. The authors' code does; the paper does not say so.
    mirror_left_hand: bool = False
    # Trunk coordinates: `frame` (paper, authors) = image position / frame size; `body` (ours) = the shoulder
    # midpoint at (0.5, 0.5), 1 unit = 2.5 shoulder widths (medians over the frames where both
    # shoulders pass score_threshold), so where the signer sits and how close does not matter.
    # A sample whose shoulders are never seen that way keeps the frame form (counted and logged).
    trunk_norm: Literal["frame", "body"] = "body"
    max_frames: int = Field(default=150, ge=1)
    # How samples without an official split are split: `random` (class-stratified) or `signer`
    # (no signer in two splits). Samples marked test or val keep their split; a dataset with
    # train and test only gets val_fraction of its train samples as validation.
    split: Literal["random", "signer"] = "signer"
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    test_fraction: float = Field(default=0.2, ge=0, lt=1)
    # Labelled fractions of the training split for the semi-supervised protocol: seeded,
    # class-stratified and nested (the 20 % subset lies inside the 40 % one).
    label_fractions: tuple[float, ...] = Field(default=(0.2, 0.4, 0.6), strict=False)
    seed: int = 0
    max_bad_fraction: float = Field(default=0.1, ge=0, le=1)

    @field_validator("label_fractions")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < f <= 1 for f in value):
            raise ValueError("each fraction must be in (0, 1]")
        return tuple(sorted(set(value)))


class StageAugment(Section):
    """One training stage's augmentation of a view (METHOD.md section 4). The defaults and
    ranges are ours: the paper names rotation, scale, shear, joint mask and flip without numbers.
    Each `authors` note gives the authors' code's value for that stage."""

    # Temporal random crop of length in [crop_min_ratio * T, T], at least crop_min_frames.
    crop_min_ratio: float = Field(default=0.1, gt=0, le=1)  # the paper gives no alpha
    crop_min_frames: int = Field(default=32, ge=1)
    # `affine_mask` (ours): with affine_probability one affine (rotation x scale x shear) about
    # each part's centre, then with joint_mask_probability joint_mask_count joints zeroed.
    # `corrupt_or_shear` (authors' pretraining): with joint_mask_probability a corruption of
    # joint_mask_count joints (half the time zeroed, else moved by one 2x2 matrix of U(-1, 1)
    # entries), otherwise a shear with off-diagonal terms in [-shear, shear]; both about the
    # origin, as the authors' code. `none` (authors' fine-tuning): no spatial change.
    spatial: Literal["affine_mask", "corrupt_or_shear", "none"] = "affine_mask"
    rotation_degrees: float = Field(default=15.0, ge=0)
    scale: float = Field(default=0.2, ge=0, lt=1)  # factor in [1 - scale, 1 + scale]
    shear: float = Field(default=0.2, ge=0)  # off-diagonal terms in [-shear, shear]
    affine_probability: float = Field(default=1.0, ge=0, le=1)
    # Joint mask: zero this many of the 49 joints in every frame (authors' code: 25; ours 8: with
    # 25 the trunk of a view is farther from its positive than from another sample, bench/RESULTS.md).
    joint_mask_count: int = Field(default=8, ge=0, le=49)
    joint_mask_probability: float = Field(default=0.5, ge=0, le=1)
    # Flip (left-handed signers): `mirror` (ours) = the hands trade places and x is mirrored, the
    # trunk's arms too; `swap_hands` (authors' code) = only the hand streams trade places.
    flip: Literal["mirror", "swap_hands"] = "mirror"
    flip_probability: float = Field(default=0.5, ge=0, le=1)
    # Trunk only, one draw per view, after the spatial step: a shift of up to trunk_translate in
    # each axis (trunk units: 2.5 shoulder widths with preprocess.trunk_norm body, the frame size
    # with frame) and one factor in [1 - trunk_scale, 1 + trunk_scale] about the centre (the
    # shoulder midpoint with body): a signer sitting elsewhere or closer. 0 = off (and no random
    # number drawn).
    trunk_translate: float = Field(default=0.0, ge=0)
    trunk_scale: float = Field(default=0.0, ge=0, lt=1)


class PretrainAugment(StageAugment):
    # The two views: `shared` flips both views of a sample or neither (ours); `independent` draws
    # the flip per view (paper, authors' code), so half the positive pairs are mirror images.
    flip_views: Literal["shared", "independent"] = "shared"


class AugmentParams(Section):
    """Views of the training loader (METHOD.md sections 3-4), per stage, and the test-time view."""

    # T': every sample is resampled to this many frames; `auto` = the median length of the
    # training split's sequences, clamped to [FRAMES_AUTO_MIN, FRAMES_AUTO_MAX], resolved when
    # training starts (slrpipe.data.frames) and recorded in the checkpoint as a number.
    frames: Annotated[int, Field(ge=2)] | Literal["auto"] = 64
    # Motion = first-order difference. `backward` (paper): m_1 = 0, m_t = x_t - x_(t-1);
    # `forward` (authors' code): m_t = x_(t+1) - x_t, last = 0.
    motion: Literal["backward", "forward"] = "backward"
    # `sequence` (paper): motion is the difference of the processed sequence, and each branch gets
    # views augmented on their own; `view` (authors' code): the difference of each augmented joint
    # view, so a sample's joint and motion inputs share one augmentation.
    motion_source: Literal["sequence", "view"] = "sequence"
    # Evaluation (validation, evaluate, predict, the kNN monitor) sees the centred test_crop of the
    # sequence, resampled to T'. 1.0 = all of it (ours); authors' code: 0.95.
    test_crop: float = Field(default=1.0, gt=0, le=1)
    pretrain: PretrainAugment = PretrainAugment()
    finetune: StageAugment = StageAugment()

    @classmethod
    def from_saved(cls, data: dict) -> AugmentParams:
        """The settings a model file or checkpoint stored. Files written before augmentation was
        set per stage hold one flat set of stage keys, used by both stages, and computed motion
        from each view."""
        stage_keys = set(PretrainAugment.model_fields)
        if not stage_keys & set(data):
            return cls.model_validate(data)
        stage = {key: value for key, value in data.items() if key in stage_keys}
        rest = {key: value for key, value in data.items() if key not in stage_keys}
        finetune = {key: value for key, value in stage.items() if key in StageAugment.model_fields}
        return cls.model_validate({"motion_source": "view", **rest, "pretrain": stage, "finetune": finetune})


GcnBlock = Literal["plain", "stgcn"]
TemporalBlock = Literal["residual", "multiscale"]
TransformerForm = Literal["pre_norm", "post_norm"]
InitForm = Literal["torch", "xavier"]
HandParts = Literal["four_joint_fingers", "three_joint_fingers"]
ENCODER_FORM_KEYS = ("gcn_block", "temporal_block", "transformer", "init", "hand_parts")


class EncoderForm(Section):
    """How the encoder's blocks are built (params.yaml `model:`, METHOD.md section 9); the
    defaults are the paper's form, or ours where the paper gives only widths."""

    gcn_block: GcnBlock = "plain"
    temporal_block: TemporalBlock = "residual"
    transformer: TransformerForm = "pre_norm"
    init: InitForm = "torch"
    hand_parts: HandParts = "four_joint_fingers"


class ModelSize(Section):
    """Widths and depths of one encoder (METHOD.md section 5), and (`form`, filled in from
    `model:` by ModelParams.chosen) how its blocks are built, so that everything that builds,
    fingerprints or saves a model from a size gets both."""

    joint_channels: tuple[int, ...] = Field(default=(128, 128, 256), strict=False)  # per-joint GCN layers
    part_channels: tuple[int, ...] = Field(default=(512, 512), strict=False)  # part-graph GCN layers; the last is the feature width
    temporal_blocks: int = Field(default=2, ge=0)  # temporal convolutions before the Transformers
    temporal_kernel: int = Field(default=7, ge=1)
    hand_layers: int = Field(default=3, ge=1)  # Transformer over (right || left) hand tokens
    hand_heads: int = Field(default=8, ge=1)
    hand_ff: int = Field(default=1536, ge=1)
    trunk_layers: int = Field(default=3, ge=1)
    trunk_heads: int = Field(default=8, ge=1)
    trunk_ff: int = Field(default=1024, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    head_hidden: int = Field(default=512, ge=1)  # pretraining MLP head: width -> hidden -> ReLU -> head_dim
    head_dim: int = Field(default=128, ge=1)
    form: EncoderForm = EncoderForm()

    @property
    def width(self) -> int:
        return self.part_channels[-1]


class ModelParams(Section):
    size: str = "small"
    sizes: dict[str, ModelSize] = {"paper": ModelSize()}
    # torch.compile the encoders in pretraining and fine-tuning (slrpipe/engine/compiling.py).
    compile: bool = False
    # The encoder's block forms (EncoderForm); params.yaml's comments say what the authors' code does.
    gcn_block: GcnBlock = "plain"
    temporal_block: TemporalBlock = "residual"
    transformer: TransformerForm = "pre_norm"
    init: InitForm = "torch"
    hand_parts: HandParts = "four_joint_fingers"

    @field_validator("sizes")
    @classmethod
    def _heads_divide(cls, sizes: dict[str, ModelSize]) -> dict[str, ModelSize]:
        for name, size in sizes.items():
            if (2 * size.width) % size.hand_heads or size.width % size.trunk_heads:
                raise ValueError(f"{name}: the feature width must be divisible by the number of heads")
            if size.form != EncoderForm():  # (a default one is what a dump of ModelParams holds)
                raise ValueError(f"{name}: set the encoder form under model: ({', '.join(ENCODER_FORM_KEYS)}), not per size")
        return sizes

    @property
    def form(self) -> EncoderForm:
        return EncoderForm(**{key: getattr(self, key) for key in ENCODER_FORM_KEYS})

    @property
    def chosen(self) -> ModelSize:
        return self.sizes[self.size].model_copy(update={"form": self.form})


class PretrainParams(Section):
    """Dual-branch contrastive pretraining (METHOD.md section 6). Paper's form by default;
    each `# authors:` comment names the switch that gives the authors' code's form."""

    # The datasets (names under `datasets:`) whose training samples pretraining reads, as one
    # corpus (the paper: the union of all four datasets' training sets).
    corpus: tuple[str, ...] = Field(default=(), strict=False)
    # Table VI: this fraction of each member's corpus samples, seeded (seed below) and nested
    # (the 0.25 subset lies inside the 0.5 one). 0 = no pretraining: fine-tuning starts from
    # random initialisation, as protocol scratch.
    corpus_fraction: float = Field(default=1.0, ge=0, le=1)

    # Ablations (Tables VII-XI): which branches, parts and loss terms are trained.
    branches: Literal["both", "joint", "motion"] = "both"
    parts: Literal["both", "hand", "trunk"] = "both"
    use_consistency: bool = True
    use_knowledge_transfer: bool = True
    transfer_joint_to_motion: bool = True  # per direction (Table VIII)
    transfer_motion_to_joint: bool = True
    lambda_joint: float = Field(default=0.5, ge=0)  # authors: 1.0 (every term weighted 1)
    lambda_motion: float = Field(default=0.5, ge=0)  # authors: 1.0
    # Consistency: `softmax` = Eq. 3 (softmax over the embedding dimension);
    # authors: `neighbour` (cross-part KL on bank neighbours).
    consistency_form: Literal["softmax", "neighbour"] = "softmax"
    neighbour_top_k: int = Field(default=1024, ge=1)
    neighbour_tau_teacher: float = Field(default=0.05, gt=0)
    neighbour_tau_student: float = Field(default=0.1, gt=0)
    # Knowledge-transfer anchors: `part_sum` = hand bank + trunk bank (paper);
    # authors: `global` (a third MLP head on the summed feature, with its own banks, also contrasted).
    transfer_anchors: Literal["part_sum", "global"] = "part_sum"
    bank_size: int = Field(default=16384, ge=1)  # authors: 16384 global, part banks part_bank_size
    part_bank_size: int = Field(default=8192, ge=1)  # only with transfer_anchors: global
    transfer_top_k: int = Field(default=8192, ge=1)  # K
    tau_contrast: float = Field(default=0.07, gt=0)
    tau_consistency: float = Field(default=0.1, gt=0)
    tau_teacher: float = Field(default=0.05, gt=0)
    tau_student: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.99, ge=0, le=1)  # key encoder EMA; authors: 0.999
    # Banks before the first step: `random` (MoCo, the authors' code) starts from random unit
    # vectors, which are easy negatives, so the first epoch's contrastive loss reads far below
    # chance, then rises; `keys` fills them with the key encoders' embeddings of training samples,
    # so the curve starts honest (it cost kNN accuracy in a small test: bench/RESULTS.md).
    bank_init: Literal["random", "keys"] = "random"
    # Several GPUs: gather keys from every rank before enqueueing, so each bank sees the
    # global batch. authors: false (per-GPU banks).
    gather_keys: bool = True
    # BatchNorm statistics across GPUs; authors: false (per-GPU statistics), the paper does not say.
    sync_batchnorm: bool = False

    # Optimisation
    epochs: int = Field(default=150, ge=1)
    batch_size: int = Field(default=64, ge=1)  # per GPU
    lr: float = Field(default=0.01, gt=0)
    sgd_momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    lr_steps: tuple[int, ...] = Field(default=(50, 100), strict=False)  # lr x lr_gamma at these epochs; authors: (100,)
    lr_gamma: float = Field(default=0.1, gt=0)
    seed: int = 0
    num_workers: int = Field(default=2, ge=0)
    threads: Threads = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True  # bfloat16 autocast where the device has it natively (slrpipe.engine.runtime.native_bf16)
    # kNN accuracy of the query encoders' features on the validation split, every few epochs.
    knn_every: int = Field(default=5, ge=1)
    knn_neighbours: int = Field(default=20, ge=1)
    knn_recalibrate_bn: bool = True

    @model_validator(mode="after")
    def _top_k_within_banks(self) -> PretrainParams:
        """A top-k over more keys than its bank holds: said when params are read, not mid-training."""
        if self.use_knowledge_transfer and self.transfer_top_k > self.bank_size:
            raise ValueError(f"transfer_top_k ({self.transfer_top_k}) is more than bank_size ({self.bank_size}), "
                             "the keys knowledge transfer picks its top-k from")
        part_bank, key = (self.part_bank_size, "part_bank_size") if self.transfer_anchors == "global" else (self.bank_size, "bank_size")
        if self.use_consistency and self.consistency_form == "neighbour" and self.neighbour_top_k > part_bank:
            raise ValueError(f"neighbour_top_k ({self.neighbour_top_k}) is more than {key} ({part_bank}), the part banks "
                             "consistency_form neighbour picks its top-k from")
        return self

    @property
    def contrast_chance(self) -> float:
        """A branch's contrastive loss (Eq. 2, summed over the contrasted embeddings) when the
        positive is no more similar than the negatives: ln(bank + 1) per embedding."""
        parts = 2 if self.parts == "both" else 1
        if self.transfer_anchors == "global":  # the authors' form also contrasts the global embedding
            return parts * math.log(self.part_bank_size + 1) + math.log(self.bank_size + 1)
        return parts * math.log(self.bank_size + 1)


class Schedule(Section):
    epochs: int = Field(ge=1)
    lr_steps: tuple[int, ...] = Field(default=(), strict=False)  # lr x lr_gamma at these epochs


class FinetuneParams(Section):
    """Downstream training (METHOD.md section 7)."""

    # The datasets (names under `datasets:`, labelled) fine-tuned and evaluated, each on its own.
    targets: tuple[str, ...] = Field(default=(), strict=False)
    # finetune: all weights train from the pretrained query encoders; linear: encoders frozen;
    # semi: like finetune, on a saved label subset; scratch: same model, random initialisation.
    # baseline: no encoder, a logistic regression on body-normalized joints (slrpipe.model.baseline).
    protocol: Literal["finetune", "linear", "semi", "scratch", "baseline"] = "finetune"
    # Train on a saved label subset (0.2 = the 20 % subset). `semi` needs one; the other
    # protocols use it when set (e.g. scratch at 20 %, the baseline of the semi-supervised table).
    label_fraction: float | None = Field(default=None, gt=0, le=1)
    branches: Literal["both", "joint", "motion"] = "both"
    parts: Literal["both", "hand", "trunk"] = "both"
    # Prediction = sum of the joint and motion branch logits (paper); authors: mean.
    combine: Literal["sum", "mean"] = "sum"
    # Which epoch's weights become best.pt: `val` = best validation top-1 (an error without a
    # validation split); `last` = the final epoch; authors: `test` = best test top-1, which lets
    # the test split pick the model (METHOD.md section 9; optimistic, and results.md says so).
    select: Literal["val", "last", "test"] = "val"
    # Before each epoch's validation (hence in best.pt), recompute the encoders' BatchNorm
    # statistics on un-augmented views of the training samples (ours). Without it (paper,
    # authors), evaluation normalizes clean sequences with statistics of augmented ones.
    # The linear protocol's frozen encoders keep their pretrained statistics either way.
    recalibrate_bn: bool = True
    # Early stopping: end training after this many epochs without a better validation top-1
    # (the schedule's epochs become an upper bound; best.pt stays the best epoch). Needs
    # select: val. None = every epoch of the schedule (paper, authors).
    patience: int | None = Field(default=None, ge=1)
    schedules: dict[str, Schedule] = {
        "finetune": Schedule(epochs=60),
        "linear": Schedule(epochs=70, lr_steps=(50,)),
        "semi": Schedule(epochs=60),
        "scratch": Schedule(epochs=60),
    }
    lr: float = Field(default=0.01, gt=0)
    lr_gamma: float = Field(default=0.1, gt=0)
    sgd_momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)  # authors: 0
    batch_size: int = Field(default=64, ge=1)
    augment: bool = True  # one randomly augmented view per sample while training
    seed: int = 0
    num_workers: int = Field(default=2, ge=0)
    threads: Threads = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True

    @field_validator("schedules")
    @classmethod
    def _every_protocol(cls, schedules: dict[str, Schedule]) -> dict[str, Schedule]:
        missing = {"finetune", "linear", "semi", "scratch"} - set(schedules)
        if missing:
            raise ValueError(f"no schedule for {', '.join(sorted(missing))}")
        return schedules

    @model_validator(mode="after")
    def _semi_needs_fraction(self) -> FinetuneParams:
        if self.protocol == "semi" and self.label_fraction is None:
            raise ValueError("protocol semi needs label_fraction (0.2, 0.4 or 0.6: a subset saved by preprocess)")
        return self

    @model_validator(mode="after")
    def _patience_needs_validation(self) -> FinetuneParams:
        if self.patience is not None and self.select != "val":
            raise ValueError(f"patience stops on validation top-1, so it needs select: val (not {self.select})")
        return self

    @property
    def schedule(self) -> Schedule:
        if self.protocol not in self.schedules:  # baseline: a closed-form fit, no epochs
            raise ValueError(f"protocol {self.protocol} has no training schedule")
        return self.schedules[self.protocol]


LoosePath = Annotated[Path, Field(strict=False)]  # a path as YAML writes it: a string


class EvaluateParams(Section):
    # Top-k accuracies to report (the paper: 1 and 5; NMFs-CSL also 2). Ks above the number of
    # classes are left out with a warning.
    topk: tuple[int, ...] = Field(default=(1, 5), strict=False)
    # Late fusion "(+R)": a scores CSV of another model for the same test samples (format in
    # slrpipe/evaluation/metrics.py), per target: {target: file} (a target left out is not
    # fused), or one file when finetune.targets names a single dataset; null = none.
    fusion_scores: LoosePath | dict[str, LoosePath] | None = None
    # How that model's scores become probabilities (ours already are): softmax (logits) | none.
    fusion_normalize: Literal["softmax", "none"] = "softmax"
    batch_size: int = Field(default=64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # 95 % bootstrap intervals of P-I / P-C top-1: resamples of the test samples and, when the
    # test split has two or more signers, of whole signers; seeded, so reruns agree. 0 = none.
    bootstrap_draws: int = Field(default=2000, ge=0)
    bootstrap_seed: int = 0

    def fusion_file(self, target: str) -> Path | None:
        """The other model's scores CSV to fuse with target `target`'s, or None."""
        if isinstance(self.fusion_scores, dict):
            return self.fusion_scores.get(target)
        return self.fusion_scores  # one file: params has a single target (parse_params checks)


class ReportParams(Section):
    # "Pretraining helps by X": another run's scores.csv for the same test samples (e.g. a scratch
    # run's, from `dvc exp`); results.md states this run minus that one with paired bootstrap
    # intervals. Per target: {target: file}, or one file when finetune.targets names a single
    # dataset. Relative to the params file; null = none.
    reference_scores: LoosePath | dict[str, LoosePath] | None = None
    reference_name: str = Field(default="reference", min_length=1)

    def reference_file(self, target: str) -> Path | None:
        """The reference run's scores CSV for target `target`, or None."""
        if isinstance(self.reference_scores, dict):
            return self.reference_scores.get(target)
        return self.reference_scores  # one file: params has a single target (parse_params checks)


DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

# The old single-dataset layout, and how to write it now (dvc.yaml reads `datasets` itself, so
# an old file cannot be converted in memory: DVC would not see the converted names).
OLD_LAYOUT = ("the single `dataset:` section is now `datasets:` with a name per dataset: rename `dataset:` to "
              "`datasets:`, indent its keys under a name of your choice (e.g. `mydata:`), and add "
              "`corpus: [mydata]` under pretrain and `targets: [mydata]` under finetune (README, \"The corpus\")")


class Params(Section):
    # Every dataset of the project, by name: the one list stages, dvc.yaml and the report use.
    datasets: dict[DatasetName, DatasetParams]
    extract: ExtractParams = ExtractParams()
    preprocess: PreprocessParams = PreprocessParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams(size="paper")
    pretrain: PretrainParams = PretrainParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()

    def dataset(self, name: str | None = None) -> DatasetParams:
        """The dataset called `name`; None = the only one (an error when there are several)."""
        return self.datasets[self.dataset_name(name)]

    def dataset_name(self, name: str | None = None) -> str:
        if name is None:
            if len(self.datasets) != 1:
                raise ParamsError(f"params name {len(self.datasets)} datasets ({', '.join(self.datasets)}): say which one (--dataset NAME)")
            return next(iter(self.datasets))
        if name not in self.datasets:
            raise ParamsError(f"no dataset {name!r} under datasets: (has {', '.join(self.datasets)})")
        return name


def _format_error(error: ValidationError, source: Path) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {key}: {message}{suffix}"


def parse_params(data: object, source: Path = DEFAULT_PARAMS) -> Params:
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    if "dataset" in data:
        raise ParamsError(f"{source}: dataset: {OLD_LAYOUT}")
    try:
        params = Params.model_validate(data)
    except ValidationError as error:
        raise ParamsError(_format_error(error, source)) from None
    if params.model.size not in params.model.sizes:
        raise ParamsError(f"{source}: model.size: {params.model.size!r} is not one of model.sizes ({', '.join(params.model.sizes)})")
    # Checked here, not in the models: a model file trained with such a schedule still loads.
    schedules = {"pretrain": params.pretrain, **{f"finetune.schedules.{name}": s for name, s in params.finetune.schedules.items()}}
    for key, schedule in schedules.items():
        for step in schedule.lr_steps:
            if not 1 <= step < schedule.epochs:
                raise ParamsError(f"{source}: {key}.lr_steps: step {step} is not within 1..{schedule.epochs - 1} ({key}.epochs is "
                                  f"{schedule.epochs}): the lr drops after that many epochs, so a step must come before the last")
    _check_names(params, source)
    # Resolve relative paths against the params file's folder, so stages run from anywhere.
    base = source.resolve().parent
    datasets = {name: d if d.root.is_absolute() else d.model_copy(update={"root": base / d.root})
                for name, d in params.datasets.items()}
    fusion = params.evaluate.fusion_scores
    if fusion is not None:
        fusion = ({target: base / path for target, path in fusion.items()} if isinstance(fusion, dict) else base / fusion)
        params = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"fusion_scores": fusion})})
    reference = params.report.reference_scores
    if reference is not None:
        reference = ({target: base / path for target, path in reference.items()} if isinstance(reference, dict)
                     else base / reference)
        params = params.model_copy(update={"report": params.report.model_copy(update={"reference_scores": reference})})
    extract = params.extract
    updates = {
        name: base / value
        for name in ("pose_checkpoint", "det_checkpoint")
        if (value := getattr(extract, name)) is not None and not value.is_absolute()
    }
    if updates:
        extract = extract.model_copy(update=updates)
    return params.model_copy(update={"datasets": datasets, "extract": extract})


def _check_names(params: Params, source: Path) -> None:
    """pretrain.corpus and finetune.targets name datasets that exist; a target has labels."""
    if not params.datasets:
        raise ParamsError(f"{source}: datasets: name at least one dataset")
    known = ", ".join(params.datasets)
    for key, names in (("pretrain.corpus", params.pretrain.corpus), ("finetune.targets", params.finetune.targets)):
        if not names:
            raise ParamsError(f"{source}: {key}: name at least one of the datasets ({known})")
        for name in names:
            if name not in params.datasets:
                raise ParamsError(f"{source}: {key}: {name!r} is not under datasets: (has {known})")
        if len(set(names)) != len(names):
            raise ParamsError(f"{source}: {key}: a dataset is named twice")
    targets = params.finetune.targets
    for key, files in (("evaluate.fusion_scores", params.evaluate.fusion_scores),
                       ("report.reference_scores", params.report.reference_scores)):
        if isinstance(files, dict):
            for name in files:
                if name not in targets:
                    raise ParamsError(f"{source}: {key}: {name!r} is not one of finetune.targets ({', '.join(targets)})")
        elif files is not None and len(targets) > 1:
            raise ParamsError(f"{source}: {key}: one file for {len(targets)} targets ({', '.join(targets)}): "
                              f"name the target each file scores, e.g. {{{targets[0]}: {files}}}")
    for name in params.finetune.targets:
        if not params.datasets[name].labelled:
            raise ParamsError(f"{source}: finetune.targets: {name!r} has datasets.{name}.labelled: false; "
                              "unlabelled recordings can only join pretrain.corpus")


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}".replace("\n", " ")) from None
    return parse_params(data, path)
