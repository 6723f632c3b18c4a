"""t-SNE figures of MELD's test features before and after the graphs (the paper's Appendix Figure 5).

The same code as tsne_IEMOCAP.py (see there), run on saved_features/*_MELD.pkl.
"""
import functools

import tsne_IEMOCAP
import utils

if __name__ == "__main__":
    utils.run_cli(functools.partial(tsne_IEMOCAP.main, dataset="MELD"))
