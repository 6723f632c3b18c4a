"""graph.turn_edges takes a dialogue's speaker indices as a list, an array (read-only ones too: pandas' columns
are) or a tensor, and gives the same edges without a warning."""
import warnings
from types import SimpleNamespace

import numpy as np
import torch

import graph

FLAGS = SimpleNamespace(window_spk=1, window_spk_f=1, window_dir=1, window_dir_f=2, single_edge='', directed_edge='')


def test_speakers_of_any_form_give_the_same_edges_without_a_warning():
    speakers = [0, 1, 0, 0, 1, 0]
    frozen = np.array(speakers)
    frozen.setflags(write=False)
    for stage in ('EIG', 'ECG'):
        expected = graph.turn_edges(stage, FLAGS, speakers)
        assert expected.sum() > 0
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            for form in (frozen, frozen.astype(np.int32), torch.tensor(speakers)):
                assert torch.equal(graph.turn_edges(stage, FLAGS, form), expected)
