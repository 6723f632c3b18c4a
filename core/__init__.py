"""MoED's machinery beyond the paper's files: the flags and the frozen ModelConfig, the training protocol and one pass
over the data, checkpoints, the recurrent and torch-geometric fast paths, the synthetic datasets, and the feature-
folder format that train.py --Dataset custom reads."""
