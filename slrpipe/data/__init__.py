"""The HDF5 dataset the training stages read: hand / trunk normalization (preprocess), splits and
label subsets, augmentation, and the PyTorch Dataset."""
