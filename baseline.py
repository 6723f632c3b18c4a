"""A context-free baseline on a feature folder of extract_features.py: logistic regression per utterance.

    python baseline.py DIR

Each utterance on its own (no dialogue, no speaker): the mean of its four text inputs, joined by its audio
and visual features when the folder has them, standardised on the training split. A model is trained on the
training split for each inverse regularisation C of a grid; the one with the best weighted F1 on the dev split
is scored on the test split. Prints its JSON line and its test weighted F1. lbfgs uses no randomness, so
there are no seeds: one fit per C gives the numbers every seed would (--seeds is accepted for older commands
and changes nothing).

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

import utils
from core import config, feature_folder

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
HEAD_NAMES = {'utterance': "fine-tuned encoder's own classifier",   # dataset.json's finetune.settings.head
              'dialogue': "fine-tuned encoder's dialogue classifier (a GRU over each dialogue: not context-free)",
              'moed': "MoED fine-tuned with the encoder (--finetune-head moed: not context-free; train.py starts "
                      "from it)"}
BLOCKS = {'text': lambda d: np.mean(d.text, 0), 'audio': lambda d: d.audio, 'visual': lambda d: d.visual}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('data_dir', help='a feature folder written by extract_features.py (with a dev split)')
    p.add_argument('--seeds', type=config.seed_value, nargs='+',
                   help='accepted for older commands; changes nothing (lbfgs is deterministic: one fit per C)')
    return p.parse_args(argv)


def utterance_features(fs, keys, modalities=BLOCKS):
    """(X, y): one row per utterance, the mean text input joined by audio and visual (empty when absent), or only
    the blocks of the given modalities."""
    dialogues = [fs.dialogues[key] for key in keys]
    X = np.concatenate([np.concatenate([BLOCKS[m](d) for m in modalities], 1) for d in dialogues])
    return X, np.concatenate([d.labels for d in dialogues])


def run(fs, modalities=BLOCKS):
    """The dev-tuned C and its dev and test weighted F1 (and accuracy)."""
    scaler = StandardScaler().fit(utterance_features(fs, fs.train_keys, modalities)[0])
    (X_train, y_train), (X_dev, y_dev), (X_test, y_test) = [
        (scaler.transform(X), y) for X, y in (utterance_features(fs, keys, modalities)
                                              for keys in (fs.train_keys, fs.valid_keys, fs.test_keys))]
    started = time.perf_counter()
    models = {C: LogisticRegression(C=C, max_iter=2000).fit(X_train, y_train) for C in C_GRID}
    dev_f1 = {C: utils.weighted_f1(y_dev, model.predict(X_dev)) for C, model in models.items()}
    best_C = max(C_GRID, key=lambda C: dev_f1[C])
    preds = models[best_C].predict(X_test)
    return dict(C=best_C, dev_f1=round(dev_f1[best_C], 2), test_f1=round(utils.weighted_f1(y_test, preds), 2),
                test_acc=round(utils.accuracy(y_test, preds), 2), seconds=round(time.perf_counter() - started, 1))


def summary(result):
    return (f"test weighted F1 {result['test_f1']:.2f}, accuracy {result['test_acc']:.2f} (C {result['C']:g} "
            f"chosen on dev: weighted F1 {result['dev_f1']:.2f})")


def main(argv=None):
    args = parse_args(argv)
    fs = feature_folder.load(args.data_dir)
    if not fs.valid_keys:
        raise utils.UserError(f"{args.data_dir} has no dev split to choose C on; give extract_features.py a dev CSV.")
    result = run(fs)
    print(json.dumps(result))
    print(f"logistic regression, {summary(result)}")
    if args.seeds:
        print("(--seeds changes nothing: lbfgs is deterministic, so every seed gives these numbers)")
    extracted = [m for m, letter in feature_folder.MODALITY_LETTERS.items() if letter in fs.modals]
    for modality in extracted if len(extracted) > 1 else ():
        print(f"logistic regression on {modality} alone, {summary(run(fs, (modality,)))}")
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
