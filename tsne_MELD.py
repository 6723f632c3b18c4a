"""t-SNE figures of MELD's test features before and after the graphs (the paper's Appendix Figure 5).

    python tsne_MELD.py [--features-dir saved_features] [--out-dir figures]

The code is reports/tsne_figures.py's (see there), run on saved_features/*_MELD.pkl.
"""
import functools

import utils
from reports import tsne_figures

if __name__ == "__main__":
    utils.run_cli(functools.partial(tsne_figures.main, dataset="MELD"))
