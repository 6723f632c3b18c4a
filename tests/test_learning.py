"""The synthetic data is learnable the way real ERC data is: context and modalities matter.

On IEMOCAP-shaped synthetic data, the paper's IEMOCAP model trained a few epochs must beat a
context-free logistic regression on the same utterance features by >= 5 points of weighted F1,
and the three modalities together must beat text alone.
"""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import dataloader
import utils
from core import config, synthetic, training

pytestmark = pytest.mark.slow           # trainings of several epochs
SCALE, EPOCHS, LR = 0.5, 6, '0.001'


@pytest.fixture(scope='module')
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp('learning')
    return dataloader.load_features('IEMOCAP', synthetic.ensure_synthetic('IEMOCAP', str(root), scale=SCALE))


def utterance_features(fs, keys):
    """Per-utterance features with no context: mean RoBERTa input, audio, visual."""
    rows = [np.concatenate([np.mean(fs.dialogues[k].text, 0), fs.dialogues[k].audio, fs.dialogues[k].visual], 1)
            for k in keys]
    return np.concatenate(rows), np.concatenate([fs.dialogues[k].labels for k in keys])


def logistic_regression_f1(fs):
    X_train, y_train = utterance_features(fs, fs.train_keys)
    X_test, y_test = utterance_features(fs, fs.test_keys)
    scaler = StandardScaler().fit(X_train)
    clf = LogisticRegression(C=0.05, max_iter=500).fit(scaler.transform(X_train), y_train)
    return utils.weighted_f1(y_test, clf.predict(scaler.transform(X_test)))


def moed_f1(fs, modals):
    """Best test weighted F1 over EPOCHS of the paper IEMOCAP model on `modals` (the paper's protocol)."""
    torch.set_num_threads(2)
    args = config.parse_args(['--paper', '--Dataset', 'IEMOCAP', '--modals', modals,
                                  '--directed_edge', modals, '--lr', LR, '--device', 'cpu'])
    net = training.build_model(args, fs)
    run, optimizer = training.Run.of(args, net, fs), training.make_optimizer(args, net)
    best = 0.0
    for _ in range(EPOCHS):
        training.run_pass(run, fs.train_keys, optimizer)
        result = training.run_pass(run, fs.test_keys)
        best = max(best, utils.weighted_f1(result.labels, result.preds))
    return best


def test_context_and_modalities_help(features):
    baseline = logistic_regression_f1(features)
    all_three = moed_f1(features, 'avl')
    text_only = moed_f1(features, 'l')
    print(f"weighted F1: logistic regression {baseline:.2f}, MoED avl {all_three:.2f}, MoED l {text_only:.2f}")
    assert all_three >= baseline + 5, (all_three, baseline)
    assert all_three > text_only, (all_three, text_only)
