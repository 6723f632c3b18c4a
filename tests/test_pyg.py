"""core/pyg_graph.py: the graphs as torch_geometric objects against graph.py's edge multisets, and --graph-backend pyg
against the dense backend (outputs, gradients, checkpoints)."""
import random
import re
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.data import HeteroData

import graph
import model as M
from core import checkpoints, pyg_graph
from helpers import REPO, SMALL_DIMS, build, paper_config, random_batch

WINDOWS = (-1, 0, 1, 2, 3)


def random_flags(rng):
    modals = ''.join(m for m in 'avl' if rng.random() < 0.6) or rng.choice('avl')
    return SimpleNamespace(
        modals=modals, multimodal_node=rng.choice(['both', 'ECG', 'EIG', '']),
        window_spk=rng.choice(WINDOWS), window_spk_f=rng.choice(WINDOWS),
        window_dir=rng.choice(WINDOWS), window_dir_f=rng.choice(WINDOWS),
        single_edge=rng.choice(['', 'intra', 'inter']),
        directed_edge=''.join(m for m in 'avl' if rng.random() < 0.5))


def dense_graph(stage, flags, lengths, speakers):
    """graph.py's BlockGraph of a padded batch (speakers: one list per dialogue) and its blocks."""
    T = max(lengths)
    valid = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    padded = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, spk in enumerate(speakers):
        padded[b, :len(spk)] = torch.tensor(spk)
    blocks = graph.graph_blocks(flags, stage)
    return graph.stage_graph(stage, flags, blocks, valid, padded), blocks


def pyg_rows(g, blocks):
    """The edge multiset of a stage_graphs Batch as graph.edge_list's rows, checking nodes and edge types."""
    letter = {pyg_graph.BLOCK_TYPE[b]: b for b in blocks}
    dialogue, utt, types = g.batch.tolist(), g.utt.tolist(), g.node_type.tolist()
    rows = Counter()
    for (s, d), e in zip(g.edge_index.t().tolist(), g.edge_type.tolist()):
        assert dialogue[s] == dialogue[d], 'an edge between two dialogues'
        relation = 2 if types[s] != types[d] else (0 if utt[s] < utt[d] else 1)
        assert pyg_graph.EDGE_TYPES[e] == (pyg_graph.NODE_TYPES[types[s]], pyg_graph.RELATIONS[relation],
                                           pyg_graph.NODE_TYPES[types[d]]), 'edge type'
        rows[(dialogue[s], letter[types[s]], utt[s], letter[types[d]], utt[d])] += 1
    return sorted([*key, count] for key, count in rows.items())


def test_edge_multisets_match_the_dense_graphs_over_random_dialogues_and_flags():
    rng = random.Random(0)
    for trial in range(60):
        flags = random_flags(rng)
        lengths = [rng.randint(1, 9) for _ in range(rng.randint(1, 4))]
        speakers = [[rng.randrange(3) for _ in range(n)] for n in lengths]
        for stage in ('ECG', 'EIG'):
            g_dense, blocks = dense_graph(stage, flags, lengths, speakers)
            g = pyg_graph.stage_graphs(stage, flags, lengths, torch.tensor(sum(speakers, [])))
            assert pyg_rows(g, blocks) == graph.edge_list(g_dense, blocks), f"trial {trial} {stage}: {flags}"
            # node order: per dialogue, block after block, turns in order
            for b, n in enumerate(lengths):
                one = g.get_example(b)
                assert one.node_type.tolist() == [pyg_graph.BLOCK_TYPE[k] for k in blocks for _ in range(n)]
                assert one.utt.tolist() == list(range(n)) * len(blocks)
            dst_src = g.edge_index[1] * g.num_nodes + g.edge_index[0]
            assert torch.equal(dst_src, dst_src.sort().values), 'edges sorted by destination, then source'


def test_pyg_graphs_of_a_batch_and_the_hetero_view():
    flags = SimpleNamespace(**paper_config('IEMOCAP'))
    text, audio, visual, qmask, lengths = random_batch([4, 2], SMALL_DIMS, 2)
    graphs = pyg_graph.pyg_graphs(SimpleNamespace(qmask=qmask, lengths=lengths), flags)
    assert graphs['EIG'].num_graphs == 2 and graphs['ECG'].num_nodes == 4 * 6
    one = graphs['ECG'].get_example(0)
    hetero = pyg_graph.to_hetero(one)
    assert isinstance(hetero, HeteroData)
    assert {t: hetero[t].num_nodes for t in hetero.node_types} == dict.fromkeys(pyg_graph.NODE_TYPES, 4)
    assert sum(hetero[e].edge_index.shape[1] for e in hetero.edge_types) == one.num_edges
    # IEMOCAP's ECGNN: every text turn sends to every other (past window 1 and unbounded future, both ways:
    # the pairs one apart twice); each modality sends twice to the others of its turn, once to u
    assert hetero['text', 'to_later', 'text'].edge_index.shape[1] == 2 * 3 + 2 + 1
    assert hetero['audio', 'same_turn', 'text'].edge_index.shape[1] == 2 * 4
    assert hetero['audio', 'same_turn', 'multimodal'].edge_index.shape[1] == 4


def test_connected_turns_follow_the_windows():
    cfg = dict(modals='avl', multimodal_node='both', window_spk=1, window_spk_f=0, window_dir=1, window_dir_f=0,
               single_edge='', directed_edge='avl')
    turns = pyg_graph.connected_turns(['A', 'B', 'A', 'B', 'A'], cfg)
    assert turns['EIG'] == [[2], [3], [0, 4], [1], [2]]            # the same speaker's previous turn
    assert turns['ECG'] == [[1], [0, 2], [1, 3], [2, 4], [3]]      # the turn before and after
    assert pyg_graph.connected_turns(['A', 'B', 'A'], dict(cfg, window_spk=0, window_dir=0))['ECG'] == [[], [], []]


def grads(net):
    return {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('dataset,extra', [
    ('IEMOCAP', {}), ('MELD', {}), ('MOSEI', {}), ('IEMOCAP', dict(num_L=0, num_K=1, graph_type='ECG',
                                                                   multimodal_node='ECG')),
    ('IEMOCAP', dict(modals='av', multimodal_node='', single_edge='inter', use_modal=True)),
])
def test_the_backends_agree_on_outputs_and_gradients(dataset, extra):
    cfg = dict(paper_config(dataset), dropout=0.0, **extra)
    dims = dict(SMALL_DIMS, D_text=SMALL_DIMS['D_g']) if dataset == 'MELD' else SMALL_DIMS
    torch.manual_seed(0)
    dense = build(cfg, dims).train()
    pyg = build(dict(cfg, graph_backend='pyg'), dims).train()
    assert list(pyg.state_dict()) == list(dense.state_dict())
    pyg.load_state_dict(dense.state_dict())
    batch = random_batch([6, 3, 9, 1], dims, cfg['n_speakers'])
    outs = []
    for net in (dense, pyg):
        out = net(*batch)
        (out['log_prob'] * torch.linspace(-1, 1, out['log_prob'].numel()).view_as(out['log_prob'])).sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1]['log_prob'], outs[0]['log_prob'], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1]['features_after'], outs[0]['features_after'], rtol=1e-5, atol=1e-5)
    assert grads(pyg).keys() == grads(dense).keys()
    for name, g in grads(dense).items():
        torch.testing.assert_close(grads(pyg)[name], g, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize('trained_with', ['dense', 'pyg'])
def test_a_checkpoint_trained_with_one_backend_evaluates_identically_with_the_other(trained_with, tmp_path):
    cfg = paper_config('IEMOCAP')
    other = {'dense': 'pyg', 'pyg': 'dense'}[trained_with]
    torch.manual_seed(0)
    net = build(dict(cfg, graph_backend=trained_with), SMALL_DIMS).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    batch = random_batch([5, 7, 2], SMALL_DIMS, cfg['n_speakers'])
    labels = torch.randint(0, cfg['n_classes'], (14,))
    for _ in range(3):
        optimizer.zero_grad()
        M.make_loss('IEMOCAP')(net(*batch)['log_prob'], labels).backward()
        optimizer.step()
    path = tmp_path / 'best_model_IEMOCAP.pth'
    torch.save(net.state_dict(), path)
    evaluated = {}
    for backend in (trained_with, other):
        fresh = build(dict(cfg, graph_backend=backend), SMALL_DIMS)
        checkpoints.load_checkpoint(fresh, str(path), 'cpu')
        with torch.no_grad():
            evaluated[backend] = fresh.eval()(*random_batch([8, 4], SMALL_DIMS, cfg['n_speakers'], seed=1))
    torch.testing.assert_close(evaluated[other]['log_prob'], evaluated[trained_with]['log_prob'], rtol=1e-5,
                               atol=1e-5)
    assert torch.equal(evaluated[other]['log_prob'].argmax(-1), evaluated[trained_with]['log_prob'].argmax(-1))


@pytest.mark.slow
def test_the_docs_examples_run(monkeypatch, capsys):
    """docs/pyg.md's notebook session runs as written; its GATConv layer trains under --graph-backend pyg."""
    blocks = re.findall(r'```python\n(.*?)```', (REPO / 'docs' / 'pyg.md').read_text(), re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(pyg_graph, 'CONVS', dict(pyg_graph.CONVS))
    exec(blocks[0], {})
    assert capsys.readouterr().out.strip().endswith('[[2], [3], [0], [1]]')
    exec(blocks[1], {})
    cfg = dict(paper_config('IEMOCAP'), graph_backend='pyg', dropout=0.0)
    dims = dict(SMALL_DIMS, graph_h=8)                      # heads x (h // heads) = h
    net = build(cfg, dims)
    assert not any('gate' in key for key in net.graph_model.conv1.state_dict())
    out = net(*random_batch([5, 3], dims, cfg['n_speakers']))['log_prob']
    out.sum().backward()
    assert net.graph_model.conv1.gat.att_src.grad.abs().sum() > 0


def test_the_backend_flag_is_recorded_in_the_model_config_and_not_in_the_state_dict():
    from dataclasses import asdict

    from core import config
    for argv, expected in (([], 'dense'), (['--graph-backend', 'pyg'], 'pyg')):
        args = config.parse_args(['--paper', *argv])
        cfg = config.model_config(args, dict(D_text=16, D_audio=12, D_visual=10), 6, 2)
        assert asdict(cfg)['graph_backend'] == expected
    with pytest.raises(SystemExit) as stop:
        config.parse_args(['--graph-backend', 'sparse'])
    assert stop.value.code == 2


@pytest.mark.slow
def test_bench_roofline_reports_both_backends(tmp_path, capsys):
    import json

    import bench
    bench.main(['--Dataset', 'MELD', '--roofline', '--epochs', '1', '--threads', '1', '--synthetic-scale', '0.02',
                '--data-dir', str(tmp_path)])
    line, result = capsys.readouterr().out.strip().splitlines()[-2:]
    result = json.loads(result)
    assert line.startswith('MELD: ') and 'GFLOP per training epoch' in line and 'matmul peak' in line
    assert result['epoch_gflop'] > 0 and result['matmul_peak_gflop_per_s'] > 0
    for backend in ('dense', 'pyg'):
        assert result[backend]['train_epoch_s'] > 0 and result[backend]['gflop_per_s'] > 0
        assert f"{backend} {result[backend]['train_epoch_s']:.2f} s" in line


def test_bench_counts_2_flops_per_multiply_add_forward_and_backward():
    """training_flops of one (8 x 16) @ (16 x 4) product and its backward, counted by hand: 8*16*4 multiply-adds
    forward, twice that backward (the gradients of both operands)."""
    import bench
    a, b = torch.randn(8, 16, requires_grad=True), torch.randn(16, 4, requires_grad=True)
    assert bench.training_flops(lambda: (a @ b).sum().backward()) == 2 * 8 * 16 * 4 * 3
