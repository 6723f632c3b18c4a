"""Fixtures shared by the test files (helpers.py holds the functions): the repository on sys.path, a folder
for synthetic data per session, a tiny text encoder, a tiny custom run, tiny paper runs (trained once per session).

    def test_x(encoder_dir): ...        # a tiny random BERT saved like a hub model (fixture)
    def test_y(workspace): ...          # conversation CSVs, their features, a trained run and its --testing
    def test_z(trained): trained('MELD')   # (run folder, process) of a 2-epoch paper run on tiny synthetic data
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import (  # noqa: E402
    BATCH,
    MAX_POSITIONS,
    N_LAYERS,
    SCRIPT,
    SPLITS,
    WORDS,
    conversation_rows,
    data_args,
    ok,
    run_script,
    write_csv,
)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
    """A folder where synthetic datasets are generated once per test session and cached."""
    return tmp_path_factory.mktemp('data')


@pytest.fixture(scope='session')
def encoder_dir(tmp_path_factory):
    """A randomly initialised 5-layer, 32-d BERT with a small WordPiece vocabulary, saved like a hub model."""
    import torch
    import transformers
    folder = tmp_path_factory.mktemp('tiny-bert')
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', *"abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"",
             *(f'##{c}' for c in 'abcdefghijklmnopqrstuvwxyz'), *WORDS]
    tokenizer = transformers.BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=N_LAYERS,
                                     num_attention_heads=2, intermediate_size=37,
                                     max_position_embeddings=MAX_POSITIONS)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope='session')
def workspace(tmp_path_factory, encoder_dir):
    """A folder with train.csv, dev.csv, test.csv, their features (feats/), a 2-epoch run (run/) trained with
    --valid dev, and that run's --testing outputs (testing/). Tests may add files to it, never change these."""
    import extract_features
    root = tmp_path_factory.mktemp('custom')
    csvs = [write_csv(root / f'{split}.csv', conversation_rows(n, seed))
            for seed, (split, n) in enumerate(SPLITS.items())]
    extract_features.main([*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir),
                           '--device', 'cpu'])
    common = ['--Dataset', 'custom', '--data-dir', 'feats', '--batch-size', BATCH]
    ok(run_script('train.py', *common, '--epochs', 2, '--valid', 'dev', '--out-dir', 'run', '--seed', 1, cwd=root))
    testing = ok(run_script('train.py', *common, '--testing', '--checkpoint', 'run/best_model_custom.pth',
                            '--out-dir', 'testing', cwd=root))
    (root / 'testing' / 'stdout.txt').write_text(testing.stdout)
    return root


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium (helpers.Browser), closed after the test."""
    from helpers import Browser
    b = Browser(tmp_path / 'profile')
    yield b
    b.close()


@pytest.fixture(scope='session')
def trained(tmp_path_factory, data_dir):
    """dataset -> (run folder, CompletedProcess) of a 2-epoch training run, made once per session."""
    runs = {}

    def get(dataset):
        if dataset not in runs:
            cwd = tmp_path_factory.mktemp(f'cwd-{dataset}')
            out = cwd / 'run'
            proc = ok(run_script(SCRIPT[dataset], *data_args(dataset, data_dir), '--epochs', 2, '--out-dir', out,
                                 cwd=cwd))
            assert sorted(os.listdir(cwd)) == ['run'], "a training run writes only into its run folder"
            runs[dataset] = out, proc
        return runs[dataset]
    return get
