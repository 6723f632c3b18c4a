"""baseline.py on a feature folder written here (noisy two-class text features, 3-utterance dialogues): one fit
per C of the grid, the best one on dev scored on test, and --seeds changes nothing (lbfgs is deterministic)."""
import json

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

import baseline
from core import feature_folder as F
from utils import run_cli

SPLITS = {'train': 20, 'dev': 8, 'test': 8}         # dialogues of 3 utterances


def folder(path):
    """A feature folder whose text features are the label plus noise (seeded)."""
    rng = np.random.RandomState(0)
    rows = [dict(dialogue_key=f't.csv:{split}{d}', file='t.csv', dialogue=f'{split}{d}', turn=turn, speaker='p0',
                 speaker_index=0, text='hi', label=['joy', 'sad'][rng.randint(2)], split=split)
            for split, n in SPLITS.items() for d in range(n) for turn in range(3)]
    table = pd.DataFrame(rows, columns=list(F.UTTERANCE_COLUMNS))
    signal = (table['label'] == 'sad').to_numpy(np.float32)[None, :, None]
    text = (signal + rng.normal(0, 1.5, (4, len(table), 5))).astype(np.float32)
    fields = {'label_names': ['joy', 'sad'], 'n_speakers': 1, 'speakers': {'scheme': 'party'},
              'modalities': {'text': {'encoder': {'text_model': 'tiny'}}}, 'recipe': {'layers': [1, 2, 3, 4]}}
    F.write_folder(path, {'text': text}, table, fields)
    return path


def test_one_fit_per_c_and_seeds_change_nothing(tmp_path, monkeypatch, capsys):
    feats = folder(tmp_path / 'feats')
    fits = []
    real_fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, 'fit', lambda self, X, y: fits.append(self.C) or real_fit(self, X, y))
    run_cli(baseline.main, [str(feats), '--seeds', '1', '2', '3'])
    out = capsys.readouterr().out.splitlines()
    assert sorted(fits) == sorted(baseline.C_GRID)                  # the best C is not fitted again
    result = json.loads(out[0])
    assert result['C'] in baseline.C_GRID and 50 <= result['test_f1'] <= 100
    assert out[1].startswith(f"logistic regression, test weighted F1 {result['test_f1']:.2f}")
    assert 'seeds changes nothing' in out[2] and len(out) == 3
    capsys.readouterr()
    run_cli(baseline.main, [str(feats)])
    again = capsys.readouterr().out.splitlines()
    untimed = [{k: v for k, v in json.loads(line).items() if k != 'seconds'} for line in (again[0], out[0])]
    assert untimed[0] == untimed[1] and again[1:] == out[1:2]


def test_lbfgs_ignores_its_random_state():
    """What the single fit rests on: two random states give the same lbfgs model."""
    rng = np.random.RandomState(1)
    X, y = rng.normal(size=(60, 5)), rng.randint(3, size=60)
    a, b = (LogisticRegression(max_iter=2000, random_state=seed).fit(X, y) for seed in (1, 67137))
    np.testing.assert_array_equal(a.coef_, b.coef_)
