"""extract_features.py --finetune (its default head for text, moed) on small generated conversations and the
tiny random encoder: MoED fine-tuned with the encoder is saved in the feature folder (moed_head.pth, hashed), it is the
model train.py builds by default and starts from (not with other model flags or --from-scratch), and run on
the extracted features it gives the test score the fine-tuning reported with the encoder in the loop.
"""
import json

import pandas as pd
import pytest
import torch

import utils
from core import config, feature_folder, training
from helpers import LABELS, conversation_rows, ok, run_script, write_csv

SPLITS = {'train': 8, 'dev': 3, 'test': 3}        # dialogues per split


@pytest.fixture(scope='module')
def headed(tmp_path_factory, encoder_dir):
    """train/dev/test CSVs and their features fine-tuned with the MoED head (feats/)."""
    import extract_features
    root = tmp_path_factory.mktemp('moed-head')
    csvs = [write_csv(root / f'{split}.csv', conversation_rows(n, seed, LABELS))
            for seed, (split, n) in enumerate(SPLITS.items())]
    extract_features.main([*map(str, csvs), '--out', str(root / 'feats'), '--text-model', str(encoder_dir),
                           '--finetune', '--finetune-epochs', '2',
                           '--finetune-batch-size', '8', '--finetune-lr', '1e-3', '--device', 'cpu'])
    return root


def start_of(root, *flags):
    """What train.py's model for these flags starts from, and the model."""
    args = config.parse_args(['--Dataset', 'custom', '--data-dir', str(root / 'feats'), *flags])
    fs = training.load_data(args)
    net = training.build_model(args, fs)
    return training.start_from_head(args, fs, net), net


def test_the_head_is_recorded_and_is_the_model_train_py_builds(headed):
    meta = json.loads((headed / 'feats' / 'dataset.json').read_text())
    assert feature_folder.HEAD in meta['files'] and meta['finetune']['settings']['head'] == 'moed'
    # with the MoED head the encoder reads the previous turn and the speakers' names by default (docs/own-data.md)
    assert meta['modalities']['text']['input'] == {'speaker': True, 'past_turns': 1}
    model_config, state = feature_folder.read_head(headed / 'feats', meta)
    start, net = start_of(headed)
    assert start.startswith(feature_folder.HEAD)
    assert model_config == dict(vars(net.cfg)) and model_config['D_text'] == 32
    for name, value in net.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_other_model_flags_or_from_scratch_start_from_the_seeded_initialisation(headed):
    fresh = start_of(headed, '--from-scratch')
    assert fresh[0].startswith('the seeded initialisation (--from-scratch')
    start, net = start_of(headed, '--num_L', '2')
    assert start.startswith('the seeded initialisation') and 'num_L 1 there, 2 here' in start
    _, head = feature_folder.read_head(headed / 'feats', fs_meta(headed))
    name = 'smax_fc.weight'
    assert not torch.equal(fresh[1].state_dict()[name], head[name])
    assert start_of(headed, '--dropout', '0.2')[0].startswith(feature_folder.HEAD)      # dropout may differ


def fs_meta(root):
    return json.loads((root / 'feats' / 'dataset.json').read_text())


def test_the_head_on_the_extracted_features_scores_what_the_fine_tuning_reported(headed):
    """The fine-tuning scored the test split with the encoder in the loop; --testing the saved MoED on the
    folder's extracted features (pooled by the extraction, not by the head) gives the same weighted F1."""
    _, state = feature_folder.read_head(headed / 'feats', fs_meta(headed))
    torch.save(state, headed / 'head_checkpoint.pth')
    ok(run_script('train.py', '--Dataset', 'custom', '--data-dir', 'feats', '--testing', '--checkpoint',
                  'head_checkpoint.pth', '--out-dir', 'testing', cwd=headed))
    out = pd.read_csv(headed / 'testing' / 'saved_outputs' / 'utterances_custom.csv')
    f1 = utils.weighted_f1(out['label'].to_numpy(), out['pred'].to_numpy())
    assert round(f1, 2) == fs_meta(headed)['finetune']['test_f1']


def test_a_changed_head_is_refused(headed, tmp_path):
    import shutil
    folder = tmp_path / 'feats'
    shutil.copytree(headed / 'feats', folder)
    with open(folder / feature_folder.HEAD, 'r+b') as f:
        f.seek(-8, 2)
        f.write(b'\0' * 8)
    proc = run_script('train.py', '--Dataset', 'custom', '--data-dir', str(folder), '--epochs', '1', '--out-dir',
                      str(tmp_path / 'run'), cwd=tmp_path)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert f'{feature_folder.HEAD} is not the file' in proc.stderr and not (tmp_path / 'run').exists()
