"""extract_features.py --finetune with the packaged encoder (all-MiniLM-L6-v2) on small generated conversations:
the encoder saved in the feature folder differs from the base, the recipe is recorded, cross-fitting gives the
training rows their folds' features, a rerun is up to date, predict.py uses the folder's encoder by itself (and
gives --testing's predictions), a different encoder and unlabelled training rows are refused.
"""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import extract_features
import predict
from helpers import LABELS, conversation_rows, ok, run_script, write_csv
from owndata import conversations, features, finetune, prediction, text_encoder
from utils import UserError, run_cli

SPLITS = {'train': 8, 'dev': 3, 'test': 3}        # dialogues per split
FLAGS = ['--finetune', '--finetune-head', 'utterance', '--finetune-epochs', '2', '--finetune-batch-size', '8',
         '--finetune-folds', '2', '--device', 'cpu']


@pytest.fixture(scope='module')
def tuned(tmp_path_factory):
    """train/dev/test CSVs, their fine-tuned features (feats/), a 1-epoch run on them (run/) and its --testing
    outputs (testing/)."""
    root = tmp_path_factory.mktemp('finetune')
    csvs = [write_csv(root / f'{split}.csv', conversation_rows(n, seed, LABELS))
            for seed, (split, n) in enumerate(SPLITS.items())]
    extract_features.main([*map(str, csvs), '--out', str(root / 'feats'), *FLAGS])
    common = ['--Dataset', 'custom', '--data-dir', 'feats', '--batch-size', 2]
    ok(run_script('train.py', *common, '--epochs', 1, '--valid', 'dev', '--out-dir', 'run', cwd=root))
    ok(run_script('train.py', *common, '--testing', '--checkpoint', 'run/best_model_custom.pth',
                  '--out-dir', 'testing', cwd=root))
    return root


def meta_of(root):
    return json.loads((root / 'feats' / 'dataset.json').read_text())


@pytest.mark.slow
def test_the_fine_tuned_encoder_is_saved_and_its_recipe_recorded(tuned):
    base = text_encoder.load_encoder(text_encoder.DEFAULT_TEXT_MODEL, 'cpu')
    saved = text_encoder.load_encoder(str(tuned / 'feats' / 'encoder'), 'cpu')
    assert (tuned / 'feats' / 'encoder' / 'model.safetensors').is_file()
    weights, base_weights = saved.model.state_dict(), base.model.state_dict()
    assert weights.keys() == base_weights.keys()
    assert not torch.equal(weights['encoder.layer.5.output.dense.weight'],
                           base_weights['encoder.layer.5.output.dense.weight'])
    meta = meta_of(tuned)
    record = meta['finetune']
    assert record['base_sha256'] == base.sha256 and record['sha256'] == saved.sha256 != base.sha256
    assert record['settings'] == {'epochs': 2, 'lr': 5e-5, 'batch_size': 8, 'warmup': 0.1, 'weight_decay': 0.01,
                                  'class_weight': False, 'label_smoothing': 0.1, 'seed': 0, 'folds': 2,
                                  'head': 'utterance'}
    assert record['history'] == [] and record['selected_epoch'] is None and 0 <= record['dev_f1'] <= 100
    for fold in record['folds']:
        assert [h['epoch'] for h in fold['history']] == [1, 2] and fold['selected_epoch'] in (1, 2)
        assert fold['select_f1'] == max(h['select_f1'] for h in fold['history'])
    assert 'dev split' in record['selection'] and 0 <= record['test_f1'] <= 100
    assert meta['recipe']['modalities']['text']['encoder_sha256'] == saved.sha256
    assert meta['modalities']['text']['encoder']['text_model'] == str(tuned / 'feats' / 'encoder')
    train = meta['counts']['train']['utterances']
    assert sum(fold['utterances'] for fold in record['folds']) == train and len(record['folds']) == 2


@pytest.mark.slow
def test_cross_fitting_gives_only_the_training_rows_other_features(tuned):
    """dev and test rows carry the saved encoder's features; training rows their fold encoder's."""
    table = pd.read_csv(tuned / 'feats' / 'utterances.csv', keep_default_na=False)
    with np.load(tuned / 'feats' / 'features.npz') as z:
        text = z['text']
    saved = text_encoder.load_encoder(str(tuned / 'feats' / 'encoder'), 'cpu')
    settings = features.ExtractionSettings.from_args(extract_features.parse_args(['x.csv', '--out', 'x']))
    again = text_encoder.extract_text(settings, saved, table)[0]
    train = (table['split'] == 'train').to_numpy()
    np.testing.assert_allclose(text[:, ~train], again[:, ~train], atol=1e-5)
    assert np.abs(text[:, train] - again[:, train]).max() > 1e-3


@pytest.mark.slow
def test_the_saved_encoder_is_the_average_of_the_fold_encoders(tuned):
    """Two fold classifiers fine-tuned here (each on the other fold's dialogues, the epoch chosen on dev) and
    averaged weight by weight give the saved encoder."""
    csvs = [str(tuned / f'{split}.csv') for split in SPLITS]
    settings = extract_features.parse_args([*csvs, '--out', 'x', *FLAGS])
    table = conversations.read_conversations(csvs, conversations.columns_from_args(settings)).table
    names = extract_features.label_names(table)
    labels = table['label'].map({name: i for i, name in enumerate(names)}).to_numpy()
    base = text_encoder.load_encoder(text_encoder.DEFAULT_TEXT_MODEL, 'cpu')
    inputs = text_encoder.encoder_inputs(table, text_encoder.text_input(settings))
    train, dev, _ = finetune.selection_split(table, 0)
    states = [finetune.fine_tune(settings, base, inputs, labels, np.setdiff1d(train, fold), dev, len(names),
                                 'fold')[0].encoder.state_dict() for fold in finetune.folds_of(table, train, 2, 0)]
    saved = text_encoder.load_encoder(str(tuned / 'feats' / 'encoder'), 'cpu').model.state_dict()
    name = 'encoder.layer.5.output.dense.weight'
    assert not torch.allclose(states[0][name], states[1][name], atol=1e-4)
    for name, value in saved.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[0][name] + states[1][name]) / 2, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_rerun_is_up_to_date_and_predict_uses_the_folders_encoder(tuned, monkeypatch, capsys):
    csvs = [str(tuned / f'{split}.csv') for split in SPLITS]
    before = (tuned / 'feats' / 'dataset.json').read_bytes()
    capsys.readouterr()
    extract_features.main([*csvs, '--out', str(tuned / 'feats'), *FLAGS])
    assert 'is up to date' in capsys.readouterr().out
    assert (tuned / 'feats' / 'dataset.json').read_bytes() == before
    out = prediction.predict(tuned / 'run', tuned / 'test.csv')            # no --text-model: the folder's encoder
    testing = pd.read_csv(tuned / 'testing' / 'saved_outputs' / 'utterances_custom.csv')
    assert out['predicted'].tolist() == [LABELS[p] for p in testing['pred']]


@pytest.mark.slow
def test_predict_refuses_another_encoder(tuned, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(predict.main, [str(tuned / 'run'), str(tuned / 'test.csv'), '--out', str(tuned / 'p.csv'),
                               '--text-model', text_encoder.DEFAULT_TEXT_MODEL])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'is not the one the run' in err and 'Traceback' not in err
    assert not (tuned / 'p.csv').exists()


def test_training_rows_without_labels_are_refused_before_any_work(tmp_path, capsys):
    rows = conversation_rows(2, 0, LABELS)
    train = write_csv(tmp_path / 'train.csv', [row[:4] for row in rows], columns=('dialogue', 'turn', 'speaker',
                                                                                    'text'))
    test = write_csv(tmp_path / 'test.csv', [row[:4] for row in rows], columns=('dialogue', 'turn', 'speaker',
                                                                                  'text'))
    with pytest.raises(SystemExit) as stop:
        run_cli(extract_features.main, [str(train), str(test), '--out', str(tmp_path / 'feats'), '--finetune'])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and 'Traceback' not in err
    assert "--finetune trains the text encoder on the training split's emotion labels" in err
    assert 'train.csv' in err and not (tmp_path / 'feats').exists()


def test_without_a_dev_split_the_epoch_is_chosen_on_held_out_training_dialogues():
    table = pd.DataFrame({'key': [f'd{i // 3}' for i in range(60)], 'split': 'train', 'label': 'joy'})
    train, held, sentence = finetune.selection_split(table, seed=3)
    assert len(set(table['key'][held])) == 2 and not set(table['key'][held]) & set(table['key'][train])
    assert sorted([*train, *held]) == list(range(60)) and 'held out at random (seed 3, 10%)' in sentence
    again = finetune.selection_split(table, seed=3)
    assert np.array_equal(again[1], held)


def test_folds_split_dialogues_whole():
    table = pd.DataFrame({'key': [f'd{i // 4}' for i in range(40)]})
    rows = np.arange(40)
    folds = finetune.folds_of(table, rows, 3, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(40))
    assert all(not set(table['key'][a]) & set(table['key'][b]) for a in folds for b in folds if a is not b)


def test_check_labels_needs_two_emotions():
    table = pd.DataFrame({'split': ['train'], 'label': ['joy'], 'file': ['train.csv']})
    with pytest.raises(UserError, match='at least two emotions'):
        finetune.check_labels(table, ['joy'])


def cue_dialogues(n, seed):
    """Dialogues whose first utterance ('hi' or 'yo') decides every utterance's label; the later ones all read
    'ok ok', so only the context tells them apart."""
    rng = np.random.RandomState(seed)
    rows = []
    for d in range(n):
        cue = rng.randint(2)
        rows += [{'key': f'{seed}-{d}', 'text': ['hi', 'yo'][cue] if turn == 0 else 'ok ok', 'label': cue}
                 for turn in range(3)]
    return rows


@pytest.mark.slow
def test_the_dialogue_head_learns_what_only_the_context_tells(encoder_dir):
    """--finetune-head dialogue: utterances that read alike ('ok ok': the utterance head gives them all one
    prediction) get the label their dialogue's first utterance gives; plan_batches keeps dialogues whole
    and every row once."""
    table = pd.DataFrame(cue_dialogues(24, 0) + cue_dialogues(8, 1))
    train, held = np.arange(72), np.arange(72, 96)
    keys, labels = table['key'].to_numpy(), table['label'].to_numpy()
    base = text_encoder.load_encoder(str(encoder_dir), 'cpu')
    settings = extract_features.parse_args(['x.csv', '--out', 'x', '--finetune-epochs', '12', '--finetune-lr', '1e-3',
                                            '--finetune-batch-size', '10', '--finetune-head', 'dialogue',
                                            '--device', 'cpu'])
    inputs = text_encoder.encoder_inputs(table, {})
    seen = [part for part, _ in finetune.batches(base, inputs, train, 10, np.random.RandomState(0), keys)]
    assert sorted(np.concatenate(seen).tolist()) == train.tolist()
    assert all(len(part) >= 10 or part is seen[-1] for part in seen)
    assert all(set(keys[part]).isdisjoint(keys[other]) for part in seen for other in seen if part is not other)
    model, history, _ = finetune.fine_tune(settings, base, inputs, labels, train, held, 2, 'test', keys)
    preds = finetune.predict_rows(model, base, inputs, held, 10, 'cpu', keys)
    later = table['text'].to_numpy()[held] == 'ok ok'
    assert (preds[later] == labels[held][later]).mean() >= 0.9, history


def test_the_dialogue_heads_new_layers_learn_at_their_own_rate(encoder_dir):
    base = text_encoder.load_encoder(str(encoder_dir), 'cpu')
    settings = extract_features.parse_args(['x.csv', '--out', 'x', '--finetune-lr', '2e-5'])
    model = finetune.DialogueClassifier(base.model, 3)
    optimizer, _ = finetune.optimizer_and_schedule(model, settings, steps=10)
    rate = {id(p): group['initial_lr'] for group in optimizer.param_groups for p in group['params']}
    assert len(rate) == sum(1 for _ in model.parameters())
    assert {rate[id(p)] for p in model.encoder.parameters()} == {2e-5}
    assert {rate[id(p)] for p in [*model.gru.parameters(), *model.head.parameters()]} == {finetune.HEAD_LR} != {2e-5}


class Recorded:
    """optimizer_and_schedule wrapped: the rate of the first parameter group at each optimizer step, and the
    optimizer (its groups' rates after the last scheduler step)."""

    def __init__(self, monkeypatch):
        self.rates, self.optimizer = [], None
        make = finetune.optimizer_and_schedule

        def wrapped(model, settings, steps):
            self.optimizer, schedule = make(model, settings, steps)
            self.optimizer.register_step_pre_hook(
                lambda optimizer, *_: self.rates.append(optimizer.param_groups[0]['lr']))
            return self.optimizer, schedule
        monkeypatch.setattr(finetune, 'optimizer_and_schedule', wrapped)


@pytest.mark.parametrize('head', ['dialogue', 'moed'])
def test_the_rate_warms_up_and_decays_to_zero_over_the_batches_that_run(encoder_dir, monkeypatch, head):
    """Whole-dialogue batches hold at least --finetune-batch-size utterances, so an epoch has fewer batches than
    rows / batch size: 24 dialogues of 3 utterances at 10 a batch make 6 batches of 12 (not 8). The schedule
    counts the batches that run: the rate rises over the first 10% of the 12 steps, falls linearly to its last
    step's peak / (12 - 1) and is 0 after it."""
    table = pd.DataFrame(cue_dialogues(24, 0) + cue_dialogues(8, 1))
    train, held = np.arange(72), np.arange(72, 96)
    keys, labels = table['key'].to_numpy(), table['label'].to_numpy()
    base = text_encoder.load_encoder(str(encoder_dir), 'cpu')
    settings = extract_features.parse_args(['x.csv', '--out', 'x', '--finetune-epochs', '2', '--finetune-lr', '1e-3',
                                            '--finetune-batch-size', '10', '--finetune-head', head,
                                            '--device', 'cpu'])
    recorded = Recorded(monkeypatch)
    speakers = finetune.Speakers(np.zeros(len(table), dtype=np.int64), 1)
    finetune.fine_tune(settings, base, text_encoder.encoder_inputs(table, {}), labels, train, held, 2, 'test', keys,
                       speakers if head == 'moed' else None)
    peak = finetune.HEAD_LR
    assert len(recorded.rates) == 2 * 24 * 3 // 12 == 12
    assert {group['lr'] for group in recorded.optimizer.param_groups} == {0.0}
    assert recorded.rates[0] == 0 and recorded.rates[1] == pytest.approx(peak)     # round(0.1 * 12) = 1 warm-up step
    assert recorded.rates[1:] == pytest.approx([peak * (12 - step) / 11 for step in range(1, 12)])
