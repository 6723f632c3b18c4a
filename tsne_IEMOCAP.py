"""t-SNE figures of IEMOCAP's test features before and after the graphs (the paper's Figure 2).

    python tsne_IEMOCAP.py [--features-dir saved_features] [--out-dir figures]

Reads saved_features/*_IEMOCAP.pkl as `train.py --Dataset IEMOCAP ... --testing` writes them; the code is
reports/tsne_figures.py's (see there for the flags and figures).
"""
import functools

import utils
from reports import tsne_figures

if __name__ == "__main__":
    utils.run_cli(functools.partial(tsne_figures.main, dataset="IEMOCAP"))
