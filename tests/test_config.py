"""core/config.py: the paper's values per dataset, the defaults of --Dataset custom, the checks of flag combinations."""
import pytest

from core import config

# docs/own-data.md: custom data takes the IEMOCAP command's text path and optimiser, the graphs of MELD's command
# (windows, epsilons, speaker embedding, dropout), one layer each, 12 epochs and --protocol textbook
FROM_MELD = ('window_spk', 'window_spk_f', 'window_dir', 'window_dir_f', 'epsilon', 'epsilon2', 'use_speaker',
             'dropout')
FROM_IEMOCAP = ('base_model', 'lr', 'l2', 'batch_size', 'norm', 'multimodal_node', 'graph_type', 'single_edge')


def test_custom_data_trains_with_the_documented_recipe_by_default():
    """train.py --Dataset custom takes docs/own-data.md's MoED flags and protocol, with or without --paper;
    given flags win; IEMOCAP keeps the paper's values (its README command) and the authors' protocol."""
    meld = config.parse_args(['--paper', '--Dataset', 'MELD'])
    iemocap = config.parse_args(['--paper', '--Dataset', 'IEMOCAP'])
    for extra in ([], ['--paper']):
        args = config.parse_args(['--Dataset', 'custom', '--data-dir', 'feats', *extra])
        assert {f: getattr(args, f) for f in FROM_MELD} == {f: getattr(meld, f) for f in FROM_MELD}
        assert {f: getattr(args, f) for f in FROM_IEMOCAP} == {f: getattr(iemocap, f) for f in FROM_IEMOCAP}
        assert (args.num_L, args.num_K, args.epochs, args.protocol) == (1, 1, 12, 'textbook')
    given = config.parse_args(['--Dataset', 'custom', '--data-dir', 'feats', '--num_L', '2', '--protocol', 'original'])
    assert (given.num_L, given.protocol) == (2, 'original')
    default = config.parse_args([])
    assert (default.num_L, default.num_K, default.window_spk, default.protocol) == (6, 3, 10, 'original')


def test_tensorboard_is_refused_with_testing():
    with pytest.raises(SystemExit):
        config.parse_args(['--testing', '--tensorboard'])
