"""The one training loop beneath pretraining and every fine-tuning protocol, and what it owns:
devices and DDP, checkpoints, dvclive logging, exact-resume seeding, validation measures."""
