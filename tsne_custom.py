"""t-SNE figures of your own conversations' test features (`train.py --Dataset custom ... --testing`).

The same code as tsne_IEMOCAP.py (see there), run on saved_features/*_custom.pkl with the class and
speaker names of saved_features/class_names_custom.json.
"""
import functools

import tsne_IEMOCAP
import utils

if __name__ == "__main__":
    utils.run_cli(functools.partial(tsne_IEMOCAP.main, dataset="custom"))
