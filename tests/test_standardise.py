"""A custom run owns its input standardisation: audio and visual features enter MoED standardised with the
training split's statistics (model.Standardise, config.standardised_modalities), saved with the weights.

The features here have the scales of real extractions: audio like openSMILE's eGeMAPS functionals (column means
from 0.01 to 2,800, standard deviations from 0.003 to 370, the emotion in a few columns among noise), visual like
HOG descriptors in [0, 1] without any signal, text a small encoder's features without any signal. A run must learn
the emotion from the audio; multiplied by 1000 or shifted per modality, the same features must give the same run.
Folders are written directly (feature_folder.write_folder) and trained in-process through core/training.py.
"""
import numpy as np
import pandas as pd
import pytest
import torch

import model
import utils
from core import config, feature_folder, training

LABELS = ('anger', 'joy', 'neutral', 'sadness')
SPLIT_DIALOGUES = {'train': 160, 'dev': 10, 'test': 20}
TURNS, D_TEXT, D_AUDIO, D_VISUAL = 8, 16, 88, 40


def corpus(seed=0):
    """(utterances table, arrays) of a recorded-conversation-like corpus; the label is in the audio only."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-2.5, 2.6, D_AUDIO)                   # per-column std, 0.003 .. 400
    offset = scale * rng.uniform(-1, 8, D_AUDIO)                     # per-column means up to a few thousand
    signal = rng.normal(0, 1, (len(LABELS), D_AUDIO)) * (rng.random(D_AUDIO) < 0.15)   # a few informative columns
    rows, audio = [], []
    for split, n in SPLIT_DIALOGUES.items():
        for d in range(n):
            for turn in range(TURNS):
                label = int(rng.integers(len(LABELS)))
                rows.append({'dialogue_key': f'{split}.csv:{d}', 'file': f'{split}.csv', 'dialogue': str(d),
                             'turn': turn, 'speaker': f'p{turn % 2}', 'speaker_index': turn % 2, 'text': 'hello',
                             'label': LABELS[label], 'split': split})
                audio.append(offset + scale * (rng.normal(0, 1, D_AUDIO) + 1.2 * signal[label]))
    n = len(rows)
    arrays = {'text': rng.normal(0, 0.3, (4, n, D_TEXT)).astype(np.float32),
              'audio': np.asarray(audio, np.float32),
              'visual': rng.random((n, D_VISUAL)).astype(np.float32)}
    return pd.DataFrame(rows, columns=list(feature_folder.UTTERANCE_COLUMNS)), arrays


def write(folder, table, arrays):
    fields = {'label_names': list(LABELS), 'n_speakers': 2, 'speakers': {'scheme': 'party'},
              'modalities': {'text': {'encoder': {'text_model': 'made-up'}}}, 'recipe': {}}
    feature_folder.write_folder(folder, arrays, table, fields)
    return folder


def model_of(folder):
    """(args, feature set, seeded model) of train.py's custom defaults on the folder."""
    args = config.parse_args(['--Dataset', 'custom', '--data-dir', str(folder), '--valid', 'dev', '--device', 'cpu'])
    fs = training.load_data(args)
    return args, fs, training.build_model(args, fs)


def train_and_test(folder):
    """Test weighted F1 after train.py's custom defaults (12 epochs), and the trained model."""
    torch.set_num_threads(1)
    args, fs, net = model_of(folder)
    run, optimizer = training.Run.of(args, net, fs), training.make_optimizer(args, net)
    for _ in range(args.epochs):
        training.run_pass(run, fs.train_keys, optimizer)
    result = training.run_pass(run, fs.test_keys)
    return utils.weighted_f1(result.labels, result.preds), net, fs


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    table, arrays = corpus()
    return tmp_path_factory.mktemp('standardise'), table, arrays


def rescaled(arrays, edits):
    """The arrays with modality -> (factor, shift) applied, in float64 then back to float32."""
    return {m: (a.astype(np.float64) * edits[m][0] + edits[m][1]).astype(np.float32) if m in edits else a
            for m, a in arrays.items()}


def test_rescaled_features_give_the_same_outputs_before_training(data):
    root, table, arrays = data
    outputs = []
    for name, edits in (('plain', {}), ('scaled', {'audio': (1000, 0), 'visual': (1000, -300)})):
        args, fs, net = model_of(write(root / f'outputs-{name}', table, rescaled(arrays, edits)))
        net.eval()
        outputs.append(training.run_pass(training.Run.of(args, net, fs), fs.test_keys, keep_outputs=True).outputs)
    assert np.allclose(outputs[0]['log_prob'], outputs[1]['log_prob'], atol=1e-4)


@pytest.fixture(scope='module')
def plain_run(data):
    root, table, arrays = data
    return train_and_test(write(root / 'plain', table, arrays))


@pytest.mark.slow
def test_a_run_learns_from_audio_on_real_world_scales(plain_run):
    f1, net, _ = plain_run
    assert net.cfg.standardised == 'av'
    assert f1 >= 85, f1           # chance is about 25; a logistic regression on the audio: 96; unstandardised: 10


@pytest.mark.slow
@pytest.mark.parametrize('change', ['audio x 1000', 'visual x 1000 and shifted', 'audio and visual shifted'])
def test_rescaled_features_give_the_same_run(data, plain_run, change):
    root, table, arrays = data
    edits = {'audio x 1000': {'audio': (1000, 0)}, 'visual x 1000 and shifted': {'visual': (1000, -300)},
             'audio and visual shifted': {'audio': (1, 5000), 'visual': (1, 40)}}[change]
    f1, _, _ = train_and_test(write(root / change.replace(' ', '_'), table, rescaled(arrays, edits)))
    assert abs(f1 - plain_run[0]) <= 3, (f1, plain_run[0])


def test_the_statistics_are_the_training_dialogues_and_travel_in_the_state_dict(data, tmp_path):
    root, table, arrays = data
    _, fs, net = model_of(write(root / 'statistics', table, arrays))
    rows = np.concatenate([fs.dialogues[key].audio for key in fs.train_keys]).astype(np.float64)
    assert torch.allclose(net.standardise_a.mean.double(), torch.from_numpy(rows.mean(0)), rtol=1e-5)
    assert torch.allclose(net.standardise_a.std.double(), torch.from_numpy(rows.std(0)), rtol=1e-4)
    everything = np.concatenate([d.audio for d in fs.dialogues.values()]).astype(np.float64)
    assert not np.allclose(rows.mean(0), everything.mean(0), rtol=1e-4)    # dev and test would move them
    path = tmp_path / 'best_model_custom.pth'
    torch.save(net.state_dict(), path)
    again = model.MoED(net.cfg)                                            # predict.py's model: no statistics yet
    assert not torch.equal(again.standardise_a.mean, net.standardise_a.mean)
    again.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(again.standardise_v.std, net.standardise_v.std)


def test_the_paper_datasets_and_text_only_runs_standardise_nothing():
    assert config.standardised_modalities('IEMOCAP', 'avl') == ''
    assert config.standardised_modalities('custom', 'l') == ''
    assert config.standardised_modalities('custom', 'al') == 'a'
    with pytest.raises(utils.UserError, match='standardised'):
        config.ModelConfig(dataset='custom', n_classes=2, n_speakers=2, D_text=4, D_audio=0, D_visual=0, D_g=8,
                           modals='l', directed_edge='l', standardised='a')


def test_a_constant_column_becomes_zero_not_nan():
    norm = model.Standardise(3)
    norm.set_statistics(np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 0.0]]))
    out = norm(torch.tensor([[2.0, 5.0, 0.0]]))
    assert out.tolist() == [[0.0, 0.0, 0.0]]
