"""A context-free baseline on a feature folder of extract_features.py: logistic regression per utterance.

    python baseline.py DIR --seeds 1 2 3 4 5

Each utterance on its own (no dialogue, no speaker): the mean of its four text inputs, joined by its audio
and visual features when the folder has them, standardised on the training split. The inverse
regularisation C is picked from a grid by weighted F1 on the dev split, then the model is trained on the
training split and scored on the test split. Prints one JSON line per seed and the mean and standard
deviation of test weighted F1 (lbfgs is deterministic: the seed changes nothing but is recorded).

When the folder was made with extract_features.py --finetune, the fine-tuned encoder's own classifier (the
other context-free model on the same features: its epoch chosen on dev, as recorded in dataset.json) is
printed too; with --finetune-head dialogue that classifier reads each dialogue through a GRU, with
--finetune-head moed it is MoED (context models, said so), and the logistic regression is the context-free
model.
When the folder has several modalities, the same model on each modality alone follows (its
C picked on dev the same way): how much each one carries without the others.
"""
import argparse
import json
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import config
import feature_folder
import utils

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
HEAD_NAMES = {'utterance': "fine-tuned encoder's own classifier",   # dataset.json's finetune.settings.head
              'dialogue': "fine-tuned encoder's dialogue classifier (a GRU over each dialogue: not context-free)",
              'moed': "MoED fine-tuned with the encoder (--finetune-head moed: not context-free; train.py starts "
                      "from it)"}
BLOCKS = {'text': lambda d: np.mean(d.text, 0), 'audio': lambda d: d.audio, 'visual': lambda d: d.visual}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('data_dir', help='a feature folder written by extract_features.py (with a dev split)')
    p.add_argument('--seeds', type=config.seed_value, nargs='+', default=[67137],
                   help='random_state of each fit (default 67137)')
    return p.parse_args(argv)


def utterance_features(fs, keys, modalities=BLOCKS):
    """(X, y): one row per utterance, the mean text input joined by audio and visual (empty when absent), or only
    the blocks of the given modalities."""
    dialogues = [fs.dialogues[key] for key in keys]
    X = np.concatenate([np.concatenate([BLOCKS[m](d) for m in modalities], 1) for d in dialogues])
    return X, np.concatenate([d.labels for d in dialogues])


def fit(X, y, C, seed):
    return LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(X, y)


def run(fs, seed, modalities=BLOCKS):
    """The dev-tuned C and its dev and test weighted F1 (and accuracy) for one seed."""
    scaler = StandardScaler().fit(utterance_features(fs, fs.train_keys, modalities)[0])
    (X_train, y_train), (X_dev, y_dev), (X_test, y_test) = [
        (scaler.transform(X), y) for X, y in (utterance_features(fs, keys, modalities)
                                              for keys in (fs.train_keys, fs.valid_keys, fs.test_keys))]
    started = time.perf_counter()
    dev_f1 = {C: utils.weighted_f1(y_dev, fit(X_train, y_train, C, seed).predict(X_dev)) for C in C_GRID}
    best_C = max(C_GRID, key=lambda C: dev_f1[C])
    preds = fit(X_train, y_train, best_C, seed).predict(X_test)
    return dict(seed=seed, C=best_C, dev_f1=round(dev_f1[best_C], 2),
                test_f1=round(utils.weighted_f1(y_test, preds), 2), test_acc=round(utils.accuracy(y_test, preds), 2),
                seconds=round(time.perf_counter() - started, 1))


def summary(results):
    f1 = np.array([result['test_f1'] for result in results])
    spread = f1.std(ddof=1) if len(f1) > 1 else 0.0
    return f"test weighted F1 over {len(f1)} seed(s): {f1.mean():.2f} ± {spread:.2f} (sample standard deviation)"


def main(argv=None):
    args = parse_args(argv)
    fs = feature_folder.load(args.data_dir)
    if not fs.valid_keys:
        raise utils.UserError(f"{args.data_dir} has no dev split to choose C on; give extract_features.py a dev CSV.")
    results = [run(fs, seed) for seed in args.seeds]
    for result in results:
        print(json.dumps(result))
    print(f"logistic regression, {summary(results)}")
    extracted = [m for m, letter in feature_folder.MODALITY_LETTERS.items() if letter in fs.modals]
    for modality in extracted if len(extracted) > 1 else ():
        alone = [run(fs, seed, (modality,)) for seed in args.seeds]
        print(f"logistic regression on {modality} alone, {summary(alone)}")
    tuned = fs.meta.get('finetune')
    if tuned and 'test_f1' in tuned:
        which = HEAD_NAMES[tuned['settings'].get('head', 'utterance')]
        folds = tuned['folds']
        chosen = (f"the average of {len(folds)} cross-fitting folds' weights, their epochs "
                  f"{', '.join(str(fold['selected_epoch']) for fold in folds)} of {tuned['settings']['epochs']}"
                  if folds else f"epoch {tuned['selected_epoch']} of {len(tuned['history'])}")
        print(f"{which} ({chosen}, "
              f"chosen on dev, seed {tuned['settings']['seed']}): test weighted F1 {tuned['test_f1']:.2f}, "
              f"accuracy {tuned['test_acc']:.2f} (dev weighted F1 {tuned['dev_f1']:.2f})")


if __name__ == '__main__':
    utils.run_cli(main)
