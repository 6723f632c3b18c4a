"""train.py --causal (a past-only MoED) and custom runs' batch-invariant evaluation, on small random models.

- causal: a turn's outputs never depend on a later turn: the outputs of the first t turns of a dialogue are
  those of the whole dialogue's first t, for every t (graphs, GRU and LSTM encoders, audio and visual RNNs);
- a custom run's evaluation gives each dialogue the outputs it has alone, whatever its batch; the paper's
  datasets keep the reference's padded pass, where the batch's padding changes them (the golden tests pin it);
- what --causal refuses, and what it records.
"""
import pytest
import torch

import graph
from core import config
from helpers import SMALL_DIMS, build, paper_config, random_batch
from utils import UserError


def custom_flags(**changes):
    return dict(paper_config('MELD'), dataset=config.CUSTOM, n_classes=4, n_speakers=3, **changes)


def one(batch, b):
    """Dialogue b of a padded batch as a batch of its own (no padding)."""
    text, audio, visual, qmask, lengths = batch
    n = lengths[b]
    return [x[:n, b:b + 1] for x in text], audio[:n, b:b + 1], visual[:n, b:b + 1], qmask[:n, b:b + 1], [n]


def prefix(batch, t):
    text, audio, visual, qmask, lengths = batch
    return [x[:t] for x in text], audio[:t], visual[:t], qmask[:t], [t]


def randomised(flags, dims=SMALL_DIMS, seed=0):
    torch.manual_seed(seed)
    net = build(flags, dims)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.4)
        for m in net.modules():           # running statistics that are not the identity
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2)
    return net.eval()


@pytest.mark.parametrize('flags', [dict(), dict(base_model='LSTM'), dict(av_using_lstm=True),
                                   dict(window_spk=-1, window_spk_f=-1, window_dir=-1, window_dir_f=-1)],
                         ids=['gru', 'lstm', 'av-rnn', 'unbounded-windows'])
def test_a_causal_models_outputs_never_depend_on_a_later_turn(flags):
    net = randomised(custom_flags(causal=True, **flags))
    batch = random_batch([12], SMALL_DIMS, 3, seed=1)
    with torch.no_grad():
        whole = net(*batch)
        for t in range(1, 12):
            part = net(*prefix(batch, t))
            for key in ('log_prob', 'features_after'):
                torch.testing.assert_close(part[key], whole[key][:t], atol=1e-5, rtol=1e-5)
    # the full model does read later turns: the same check fails
    full = randomised(custom_flags(**flags))
    with torch.no_grad():
        assert not torch.allclose(full(*prefix(batch, 6))['log_prob'], full(*batch)['log_prob'][:6], atol=1e-3)


def test_a_causal_graph_keeps_the_full_graphs_past_edges_and_drops_the_later_ones():
    valid = torch.ones(1, 7, dtype=torch.bool)
    speakers = torch.tensor([[0, 1, 0, 0, 1, 0, 1]])
    for full, past in ((graph.ecgnn_graph(['l', 'u'], valid, 3, 2, '', 'l'),
                        graph.ecgnn_graph(['l', 'u'], valid, 3, 2, '', 'l', past_only=True)),
                       (graph.eignn_graph(['l', 'u'], speakers, valid, 2, 1, '', 'l'),
                        graph.eignn_graph(['l', 'u'], speakers, valid, 2, 1, '', 'l', past_only=True))):
        torch.testing.assert_close(past.within, full.within.tril(-1))        # [dst, src]: src < dst kept as is
        assert past.within.triu().sum() == 0 and past.within.sum() > 0
        torch.testing.assert_close(past.cross, full.cross)
        torch.testing.assert_close(past.normalising_degrees('out'), past.degrees('in'))


@pytest.mark.parametrize('flags', [dict(), dict(norm='LN2'), dict(base_model='LSTM'), dict(causal=True)],
                         ids=['gru-bn', 'ln2', 'lstm', 'causal'])
def test_a_custom_runs_evaluation_gives_each_dialogue_its_outputs_alone(flags):
    net = randomised(custom_flags(**flags))
    batch = random_batch([5, 13, 2, 9], SMALL_DIMS, 3, seed=2)
    with torch.no_grad():
        together = net(*batch)['log_prob']
        alone = torch.cat([net(*one(batch, b))['log_prob'] for b in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_the_paper_datasets_keep_the_padded_pass():
    net = randomised(paper_config('IEMOCAP'))
    batch = random_batch([5, 13], SMALL_DIMS, 2, seed=3)
    with torch.no_grad():
        together = net(*batch)['log_prob']
        alone = net(*one(batch, 0))['log_prob']
    assert not torch.allclose(together[:5], alone, atol=1e-4)


def test_causal_is_recorded_and_its_impossible_combinations_refused(tmp_path):
    args = config.parse_args(['--Dataset', 'IEMOCAP', '--causal'])
    assert args.causal and config.model_config(args, SMALL_DIMS, 6, 2).causal
    net = build(dict(custom_flags(causal=True)), SMALL_DIMS)
    assert not net.gru_l.bidirectional and net.gru_l.hidden_size == SMALL_DIMS['D_g']
    for flags, words in ((['--norm', 'LN2'], '--norm LN2 normalises over the whole dialogue'),
                         (['--graph-backend', 'pyg'], '--causal runs with --graph-backend dense')):
        with pytest.raises(SystemExit):
            config.parse_args(['--Dataset', 'IEMOCAP', '--causal', *flags])
        with pytest.raises(UserError, match=words.replace('-', '.')):
            config.ModelConfig(**custom_flags(causal=True, **dict([(flags[0][2:].replace('-', '_'), flags[1])])),
                               **SMALL_DIMS)


def test_the_forward_only_gru_pass_is_nn_grus_at_the_real_utterances():
    """recurrent.forward_gru (the packed pass --causal trains with on the CPU): nn.GRU's outputs and gradients."""
    from core import recurrent
    torch.manual_seed(4)
    gru = torch.nn.GRU(6, 5, num_layers=2, dropout=0.0)
    lengths, T = [4, 7, 2], 7
    batch = recurrent.PaddedBatch(lengths, T)
    x = torch.randn(T * len(lengths), 6)
    for b, n in enumerate(lengths):
        x[torch.arange(n, T) * len(lengths) + b] = 0.3          # every padded position holds one row
    rows = x.index_select(0, batch.distinct).requires_grad_()
    ours = recurrent.forward_gru(gru, rows, batch.source, batch)
    reference_x = batch.spread(rows)
    theirs = gru(reference_x.view(T, len(lengths), -1))[0].flatten(0, 1).index_select(0, batch.rows)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    weights = torch.randn_like(ours)
    grads = [torch.autograd.grad((out * weights).sum(), [rows, *gru.parameters()]) for out in (ours, theirs)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
