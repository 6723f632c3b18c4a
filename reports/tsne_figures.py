"""t-SNE figures of a dataset's test utterances' features before and after the graphs (the paper's Figure 2 for
IEMOCAP, Appendix Figure 5 for MELD): what tsne_IEMOCAP.py, tsne_MELD.py and tsne_custom.py run.

    tsne_figures.main(['--features-dir', 'saved_features', '--out-dir', 'figures'], dataset='IEMOCAP')

Reads saved_features/ as written by `train.py ... --testing` and saves four PNGs: the features before
and after the graphs, each coloured by emotion and by speaker. For `--Dataset custom` the class and speaker
names are in the class_names_custom.json that --testing writes beside the features. The features before the
graphs exist only for runs with all three modalities; without them, the two figures after the graphs are made.
The arrays are --testing's own (one row per test utterance, integer labels and speaker indices in range): read
as written; only a missing file, a pickle that is not plain numpy, and files of different runs (row counts
that disagree) are refused.
"""
import argparse
import functools
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from sklearn.manifold import TSNE

import dataloader
import utils
from core import config


def class_names(dataset, features_dir):
    """The names of the emotion classes and of the speaker indices of a dataset (custom: as --testing saved them)."""
    if dataset not in dataloader.DATASETS:
        path = load_path(features_dir, f"class_names_{dataset}.json", dataset)
        names = utils.read_json(path)
        if not (isinstance(names, dict) and all(isinstance(names.get(k), list) for k in ("emotion", "speaker"))):
            raise utils.UserError(f"{path} should hold the lists of emotion and speaker names that --testing "
                                  f"writes; re-run train.py --Dataset {dataset} ... --testing.")
        return names
    info = dataloader.DATASETS[dataset]
    letters = "MF" if info.speaker_format == "MF" else None    # IEMOCAP: speaker 0 is M
    return {"emotion": list(info.label_names),
            "speaker": [f"speaker {i}" + (f" ({letters[i]})" if letters else "") for i in range(info.n_speakers)]}


SAVED = {"emotion": "emotion_labels", "speaker": "speaker_index",  # --testing wrote <stem>_<dataset>.pkl
         "before": "multimodal_emotions_before", "after": "multimodal_emotions_after"}
FEATURE_SETS = {"before": "multimodal features before the graphs", "after": "features after the graphs"}
OPTIONAL = {"before": "--testing saves them only when all three modalities are used"}
MIN_UTTERANCES = 10


def parse_args(argv, dataset):
    parser = argparse.ArgumentParser(prog=f"tsne_{dataset}.py", description=(
        f"t-SNE of {dataset}'s test features saved by `train.py --Dataset {dataset} ... --testing`: "
        "before and after the graphs, coloured by emotion and by speaker (4 PNGs)."))
    parser.add_argument("--features-dir", default="saved_features", help="folder written by --testing")
    parser.add_argument("--out-dir", default="figures", help="where the PNGs go")
    parser.add_argument("--seed", type=config.seed_value, default=67137, help="seeds t-SNE and the subsample")
    parser.add_argument("--max-iter", type=functools.partial(at_least, 250), default=1000,
                        help="t-SNE iterations (at least 250)")
    parser.add_argument("--perplexity", type=functools.partial(at_least, 1), default=30,
                        help="t-SNE perplexity (lowered automatically for very few utterances)")
    parser.add_argument("--max-points", type=functools.partial(at_least, MIN_UTTERANCES), default=None,
                        help="plot a seeded random subset of this many utterances (faster)")
    return parser.parse_args(argv)


def at_least(minimum, text):
    """argparse type: an integer >= minimum."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
    return value


def load_path(features_dir, name, dataset):
    """The path of a file written by --testing; a missing file says how to make it."""
    path = os.path.join(features_dir, name)
    if not os.path.exists(path):
        raise utils.UserError(
            f"{path} is missing. The t-SNE figures read the test features that `train.py` saves with "
            f"--testing: run the README's --testing command for {dataset} first (for example "
            f"`python train.py --paper --Dataset {dataset} --testing`), or point --features-dir at "
            f"the folder it wrote.")
    return path


def load_saved(features_dir, stem, dataset):
    """One array written by --testing: (path, array)."""
    path = load_path(features_dir, f"{stem}_{dataset}.pkl", dataset)
    return path, np.asarray(utils.safe_load_pickle(path))


def load_features(features_dir, dataset):
    """Features before/after the graphs (N, F) and emotion/speaker indices (N,), their rows checked to agree.
    An optional feature set whose file --testing did not write is left out."""
    saved = {name: load_saved(features_dir, stem, dataset) for name, stem in SAVED.items()  # (path, array)
             if name not in OPTIONAL or os.path.exists(os.path.join(features_dir, f"{stem}_{dataset}.pkl"))}
    labels_path, labels = saved["emotion"]
    for path, array in saved.values():
        if array.ndim == 0 or len(array) != len(labels):
            raise utils.UserError(
                f"{path} holds an array of shape {array.shape}, but {labels_path} holds {len(labels)} "
                f"labels: expected one row per test utterance in each. Re-run train.py --testing so that "
                f"all four files come from the same run.")
    if len(labels) < MIN_UTTERANCES:
        raise utils.UserError(f"{labels_path} holds {len(labels)} test utterances; a t-SNE needs "
                              f"{MIN_UTTERANCES}.")
    columns = {name: saved[name][1].astype(np.int64) for name in ("emotion", "speaker")}
    features = {which: saved[which][1].astype(np.float32) for which in FEATURE_SETS if which in saved}
    return features, columns


def subsample(n, max_points, seed):
    """Sorted indices of a seeded random subset of max_points utterances (all of them if None)."""
    if max_points is None or max_points >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def tsne_2d(features, perplexity, max_iter, seed):
    """2-D t-SNE embedding (PCA initialisation, seeded)."""
    perplexity = min(perplexity, (len(features) - 1) / 3)  # sklearn needs perplexity < n_samples
    tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=max_iter, init="pca", random_state=seed)
    return tsne.fit_transform(features), perplexity


def palette(n):
    """n distinct colours: tab10 (enough for 7 emotions and 9 speakers), tab20, or a sampled colour map."""
    if n <= 20:
        return plt.get_cmap("tab10" if n <= 10 else "tab20").colors
    return [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]


def plot(points, classes, names, title, legend_title, path, seed):
    """Scatter plot, one colour per class (drawn in random order so that no class hides another), to PNG."""
    order = np.random.default_rng(seed).permutation(len(points))
    class_colours = palette(len(names))
    colours = np.array(class_colours)[classes[order]]
    fig, ax = plt.subplots(figsize=(7.5, 6), layout="constrained")
    try:
        ax.scatter(points[order, 0], points[order, 1], c=colours, s=9, alpha=0.8, linewidths=0)
        handles = [Line2D([], [], marker="o", linestyle="", color=class_colours[c], markersize=7,
                          label=f"{name}: {np.sum(classes == c)}")
                   for c, name in enumerate(names) if np.any(classes == c)]
        ax.legend(handles=handles, title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1),
                  frameon=False)
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        utils.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=150, bbox_inches="tight"))
    finally:
        plt.close(fig)


def main(argv=None, dataset="IEMOCAP"):
    args = parse_args(argv, dataset)
    utils.check_output_folder(args.out_dir, "--out-dir")
    features, columns = load_features(args.features_dir, dataset)
    names = class_names(dataset, args.features_dir)
    keep = subsample(len(columns["emotion"]), args.max_points, args.seed)
    for which, why in OPTIONAL.items():
        if which not in features:
            print(f"no t-SNE of the {FEATURE_SETS[which]}: {args.features_dir} has none ({why})")
    for which, chosen in features.items():
        description = FEATURE_SETS[which]
        print(f"t-SNE of {len(keep)} {dataset} test utterances, {description} "
              f"({chosen.shape[1]} dims)...", flush=True)
        points, perplexity = tsne_2d(chosen[keep], args.perplexity, args.max_iter, args.seed)
        for colouring, classes in columns.items():
            path = os.path.join(args.out_dir, f"tsne_{dataset}_{which}_{colouring}.png")
            title = (f"{dataset} test utterances: {description}, by {colouring}\n"
                     f"t-SNE of {len(keep)} utterances (perplexity {perplexity:g}, "
                     f"{args.max_iter} iterations, seed {args.seed})")
            plot(points, classes[keep], names[colouring], title, f"{colouring}: utterances", path, args.seed)
            print(f"wrote {path}")
