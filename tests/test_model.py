"""The network beyond the golden fixtures: full-size checkpoint layout, the reference's bugs fixed
(the README's "Differences from the original code"), configuration errors, and an independent torch-geometric
check of the convolutions."""
import json
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import degree

import dataloader
import graph
import model as M
from core import recurrent
from core.config import GRAPH_H, PAPER_D_G
from helpers import GOLDEN_DIR, SMALL_DIMS, build, paper_config, random_batch
from utils import UserError


@pytest.mark.parametrize('dataset', ['IEMOCAP', 'MELD', 'MOSEI'])
def test_full_size_paper_model_has_the_released_checkpoint_layout(dataset):
    expected = json.loads((GOLDEN_DIR / 'checkpoint_shapes.json').read_text())[dataset]
    info = dataloader.DATASETS[dataset]
    dims = dict(D_text=info.D_text, D_audio=info.D_audio, D_visual=info.D_visual,
                D_g=PAPER_D_G[dataset], graph_h=GRAPH_H)
    net = build(paper_config(dataset), dims)
    got = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert got == expected
    assert list(got) == list(expected), 'keys in the reference order'


@pytest.mark.parametrize('node', ['ECG', 'EIG', ''])
def test_readout_uses_each_dialogues_own_nodes(node):
    """The reference read every dialogue's nodes at the first dialogue's offsets ('' crashed)."""
    cfg = dict(paper_config('IEMOCAP', f'--multimodal_node={node}'), n_speakers=2)
    torch.manual_seed(0)
    net = build(cfg, SMALL_DIMS).eval()
    batch = random_batch([5, 5, 5], SMALL_DIMS, 2)          # equal lengths: no padding effects
    with torch.no_grad():
        together = net(*batch)['features_after']
        alone = [net(*[[t[:, b:b + 1] for t in x] if isinstance(x, list) else x[:, b:b + 1]
                       for x in batch[:4]], [5])['features_after'] for b in range(3)]
    width = {'ECG': 4, 'EIG': 4, '': 6}[node] * SMALL_DIMS['graph_h']
    assert together.shape == (15, width)
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(alone[0], alone[1])


@pytest.mark.parametrize('modals', ['la', 'al', 'lv', 'avl', 'vl'])
def test_directed_edge_l_means_the_text_node(modals):
    """The reference indexed --directed_edge by position in --modals against a fixed l, a, v order."""
    cfg = SimpleNamespace(modals=modals, multimodal_node='both')
    blocks = graph.graph_blocks(cfg, 'ECG')
    valid = torch.ones(1, 3, dtype=torch.bool)
    g = graph.ecgnn_graph(blocks, valid, 0, 0, '', 'l')
    into_u = {(src, dst) for _, src, _, dst, _, _ in graph.edge_list(g, blocks) if dst == 'u'}
    assert into_u == {('l', 'u')}


def test_modals_order_does_not_change_the_model():
    cfgs = [dict(paper_config('IEMOCAP'), modals=m, directed_edge=m[::-1]) for m in ('avl', 'lva')]
    batch = random_batch([4, 2], SMALL_DIMS, 2)
    outs = []
    for cfg in cfgs:
        torch.manual_seed(0)
        with torch.no_grad():
            outs.append(build(cfg, SMALL_DIMS).eval()(*batch)['log_prob'])
    torch.testing.assert_close(outs[0], outs[1])


IMPOSSIBLE = [
    dict(graph_type='EIG', multimodal_node='ECG'),
    dict(graph_type='ECG', multimodal_node='EIG'),
    dict(graph_type='ECG', multimodal_node=''),
    dict(modals='alx'),
    dict(modals=''),
    dict(modals='aal'),
    dict(use_speaker='bz'),
    dict(directed_edge='q'),
    dict(window_spk=-2),
    dict(window_dir_f=-5),
    dict(num_L=-1),
    dict(base_model='Transformer'),
    dict(single_edge='both'),
    dict(multimodal_node='all'),
    dict(dropout=1.5),
]


@pytest.mark.parametrize('change', IMPOSSIBLE, ids=lambda c: ','.join(f'{k}={v}' for k, v in c.items()))
def test_impossible_configurations_are_refused_before_any_work(change):
    cfg = dict(paper_config('IEMOCAP'), **change)
    with pytest.raises(UserError) as err:
        build(cfg, SMALL_DIMS)
    flags = {f'--{k}' for k in change} | {f"--{k.replace('_', '-')}" for k in change}
    assert any(flag in str(err.value) for flag in flags)


def test_meld_text_must_match_hidden_size():
    cfg = paper_config('MELD')
    with pytest.raises(UserError, match='D_g'):
        build(cfg, dict(SMALL_DIMS, D_g=8))


class ReferenceGatedConv(MessagePassing):
    """The reference formula over an explicit edge list, with torch-geometric's message passing."""

    def __init__(self, gate, normalise_by):
        super().__init__(aggr='add')
        self.gate, self.normalise_by = gate, normalise_by

    def forward(self, x, edge_index):
        src, dst = edge_index
        deg = degree(src if self.normalise_by == 'out' else dst, x.shape[0])
        inv = deg.pow(-0.5).masked_fill(deg == 0, 0)
        return self.propagate(edge_index, x=x, norm=inv[src] * inv[dst])

    def message(self, x_i, x_j, norm):
        msg = norm[:, None] * x_j
        return msg if self.gate is None else msg * torch.tanh(self.gate(torch.cat([x_i, x_j], -1)))


@pytest.mark.parametrize('stage', ['ECG', 'EIG'])
def test_block_convolutions_match_message_passing_on_the_edge_list(stage):
    torch.manual_seed(1)
    lengths, h = [7, 3, 5], 6
    blocks = ['l', 'a', 'v', 'u']
    T = max(lengths)
    valid = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    speakers = torch.randint(0, 3, (3, T)) * valid
    if stage == 'ECG':
        g, by = graph.ecgnn_graph(blocks, valid, 2, -1, '', 'av'), 'out'
        conv = graph.GatedConv(h)
    else:
        g, by = graph.eignn_graph(blocks, speakers, valid, 1, -1, 'intra', 'lv'), 'in'
        conv = graph.NormConv(h)
    x = torch.randn(len(blocks), 3, T, h)                     # block-major (nb, B, T, h)
    residual = torch.randn_like(x)
    out = torch.stack(conv(x.unbind(0), conv.coefficients(g), residual.unbind(0))) - residual
    only_u = torch.stack(conv(x.unbind(0), conv.coefficients(g), residual.unbind(0), slice(3, 4))) - residual[3:]
    torch.testing.assert_close(only_u, out[3:], rtol=0, atol=0)
    ours = [out[i][valid] for i in range(len(blocks))]
    # the same graph as an explicit edge list over the real nodes, duplicates repeated
    index = {}
    for b, n in enumerate(lengths):
        for i, blk in enumerate(blocks):
            for t in range(n):
                index[(b, blk, t)] = len(index)
    edges = [(index[(b, sb, st)], index[(b, db, dt)]) for b, sb, st, db, dt, c in graph.edge_list(g, blocks)
             for _ in range(c)]
    flat = torch.stack([x[i, b, t] for (b, _, t), i in zip(index, [blocks.index(k[1]) for k in index])])
    reference = ReferenceGatedConv(conv.gate if stage == 'ECG' else None, by)(flat, torch.tensor(edges).t())
    for i, blk in enumerate(blocks):
        rows = [n for (b, k, t), n in index.items() if k == blk]
        torch.testing.assert_close(ours[i], reference[rows], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_matches_cpu():
    cfg = paper_config('IEMOCAP')
    torch.manual_seed(0)
    net = build(cfg, SMALL_DIMS).eval()
    batch = random_batch([6, 3, 4], SMALL_DIMS, 2)
    with torch.no_grad():
        cpu = net(*batch)['log_prob']
        cuda_batch = [[t.cuda() for t in x] if isinstance(x, list) and torch.is_tensor(x[0]) else
                      (x.cuda() if torch.is_tensor(x) else x) for x in batch]
        gpu = net.cuda()(*cuda_batch)['log_prob'].cpu()
    torch.testing.assert_close(cpu, gpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shared_rows', [False, True])
def test_recurrent_gru_matches_nn_gru_over_the_padded_batch(shared_rows):
    """recurrent.bidirectional_gru against nn.GRU run over the padded batch (dropout masks included), at the
    real utterances: outputs and every gradient. shared_rows: the input given as its distinct rows."""
    torch.manual_seed(0)
    lengths, D = [7, 2, 5, 1], 12
    T, B = max(lengths), len(lengths)
    gru = torch.nn.GRU(D, D // 2, num_layers=2, bidirectional=True, dropout=0.3)
    batch = recurrent.PaddedBatch(lengths, T)
    real = (torch.arange(T)[:, None] < torch.tensor(lengths)[None]).float()[..., None]
    padded = torch.randn(T, B, D) * real + (1 - real) * torch.randn(D)       # one row at every padded position
    x = (padded.flatten(0, 1)[batch.distinct] if shared_rows else padded.flatten(0, 1)).requires_grad_()
    index = batch.source if shared_rows else None

    def run(encoder):
        torch.manual_seed(1)
        out = encoder()
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [x.grad.clone()] + [p.grad.clone() for p in gru.parameters()]
        x.grad = None
        gru.zero_grad()
        return out.detach(), grads

    ours, our_grads = run(lambda: recurrent.bidirectional_gru(gru, x, index, batch))
    rows = x[index] if shared_rows else x
    theirs, their_grads = run(lambda: M.real_rows(gru(rows.view(T, B, D))[0], batch.rows))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    for ours_grad, their_grad in zip(our_grads, their_grads):
        torch.testing.assert_close(ours_grad, their_grad, rtol=1e-5, atol=1e-6)


def random_configuration(rng):
    """A random valid model configuration of a random dataset, over every model flag."""
    dataset = rng.choice(['IEMOCAP', 'MELD', 'MOSEI'])
    modals = ''.join(rng.sample('avl', rng.randint(1, 3)))
    graph_type = rng.choice(['both', 'both', 'ECG', 'EIG'])
    node = rng.choice(['both', 'ECG', 'EIG', ''] if graph_type == 'both' else ['both', graph_type])
    info = dataloader.DATASETS[dataset]
    return dict(dataset=dataset, n_classes=info.n_classes, n_speakers=info.n_speakers, modals=modals,
                base_model=rng.choice(['GRU', 'GRU', 'LSTM']), dropout=rng.choice([0.0, 0.3]),
                norm=rng.choice(['BN', 'LN', 'LN2', 'none']), num_L=rng.randint(0, 3), num_K=rng.randint(0, 3),
                **{w: rng.choice([-1, 0, 1, 2, 4])
                   for w in ('window_spk', 'window_spk_f', 'window_dir', 'window_dir_f')},
                epsilon=rng.choice([0.5, 1.0, 1.5]), epsilon2=rng.choice([0.5, 1.0]),
                use_speaker=''.join(rng.sample('bcdefghi', rng.randint(0, 3))), use_modal=rng.random() < 0.5,
                multimodal_node=node, graph_type=graph_type,
                directed_edge=''.join(rng.sample('avl', rng.randint(0, 3))),
                single_edge=rng.choice(['', 'intra', 'inter']),
                av_using_lstm=rng.random() < 0.5)


def output_and_gradients(net, batch, seed=3):
    """log_prob in train mode (dropout drawn from `seed`) and every parameter's gradient of a fixed projection."""
    net.zero_grad()
    torch.manual_seed(seed)
    log_prob = net.train()(*batch)['log_prob']
    (log_prob * torch.linspace(-1, 1, log_prob.numel()).view_as(log_prob)).sum().backward()
    return log_prob.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def padded_reference_gru(gru, x, index, batch):
    """nn.GRU itself over the padded batch (what recurrent.bidirectional_gru computes with less work)."""
    rows = x if index is None else x.index_select(0, index)
    return M.real_rows(gru(rows.view(batch.T, batch.B, -1))[0], batch.rows)


@pytest.mark.parametrize('seed', [*range(8), *(pytest.param(seed, marks=pytest.mark.slow) for seed in range(8, 24))])
def test_fast_paths_agree_with_plain_ones_over_random_configurations(seed, monkeypatch):
    """The hot path's shortcuts change no number in any configuration: the graphs run over every grouping of
    the dialogues by length (one group, one per dialogue), the GRU encoders as nn.GRU over the padded batch,
    and EIGNN in hidden space (as in eval mode) rather than in class space."""
    import random
    rng = random.Random(seed)
    flags = random_configuration(rng)
    dims = dict(SMALL_DIMS, D_text=SMALL_DIMS['D_g']) if flags['dataset'] == 'MELD' else SMALL_DIMS
    torch.manual_seed(seed)
    net = build(flags, dims)
    batch = random_batch(rng.sample([7, 1, 4, 7, 2, 5, 3], rng.randint(2, 7)), dims, flags['n_speakers'], seed)
    fast, fast_grads = output_and_gradients(net, batch)
    plain_paths = {'one group': (graph, 'length_groups', lambda lengths, overhead=0: [
                       (sorted(range(len(lengths)), key=lambda b: -lengths[b]), max(lengths))]),
                   'a group per dialogue': (graph, 'length_groups', lambda lengths, overhead=0: [
                       ([b], n) for b, n in enumerate(lengths)]),
                   'nn.GRU': (recurrent, 'bidirectional_gru', padded_reference_gru),
                   'EIGNN in hidden space': (graph.NormConv, 'linear', False)}
    for name, (module, function, plain_version) in plain_paths.items():
        with monkeypatch.context() as m:
            m.setattr(module, function, plain_version)
            plain, plain_grads = output_and_gradients(net, batch)
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6, msg=lambda s: f'{name}, {flags}: {s}')
        assert fast_grads.keys() == plain_grads.keys()
        for key in fast_grads:
            torch.testing.assert_close(fast_grads[key], plain_grads[key], rtol=1e-4, atol=1e-6,
                                       msg=lambda s: f'{name}, {key}, {flags}: {s}')
