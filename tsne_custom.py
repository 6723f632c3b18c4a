"""t-SNE figures of your own conversations' test features (`train.py --Dataset custom ... --testing`).

    python tsne_custom.py [--features-dir saved_features] [--out-dir figures]

The code is reports/tsne_figures.py's (see there), run on saved_features/*_custom.pkl with the class and
speaker names of saved_features/class_names_custom.json.
"""
import functools

import utils
from reports import tsne_figures

if __name__ == "__main__":
    utils.run_cli(functools.partial(tsne_figures.main, dataset="custom"))
