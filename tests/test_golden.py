"""The network against the original implementation's outputs (tests/golden, or $MOED_GOLDEN_DIR).

Every `*.pt` fixture and every case of every `edges*.json` in that folder is a test: a new
fixture dropped into the folder is picked up with no code change. The network's tests run under both
--graph-backend values (dense, the default, and pyg: torch_geometric's MessagePassing), on the CPU, or on
the device $MOED_TEST_DEVICE names (cuda: .ci/gpu-checks; TF32 off, the GRU as nn.GRU, cuDNN's).
"""
import json
import os
from types import SimpleNamespace

import pytest
import torch

import graph
import model as M
from core.config import ModelConfig
from helpers import GOLDEN_DIR

MODEL_FIXTURES = sorted(GOLDEN_DIR.glob('*.pt'))
EDGE_CASES = [(f.name, i, case) for f in sorted(GOLDEN_DIR.glob('edges*.json'))
              for i, case in enumerate(json.loads(f.read_text()))]
ATOL = 1e-5
BACKENDS = ['dense', 'pyg']
DEVICE = torch.device(os.environ.get('MOED_TEST_DEVICE', 'cpu'))
if DEVICE.type == 'cuda':                   # float32 products as float32, as on the CPU
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def load_fixture(path):
    fixture = torch.load(path, weights_only=True)
    cfg = dict(fixture['config'])
    dims = cfg.pop('dims')
    return cfg, dims, fixture


def build(cfg, dims, state_dict, training, backend):
    net = M.MoED(ModelConfig.from_dict({**cfg, **dims, 'graph_backend': backend}))
    net.load_state_dict(state_dict, strict=True)
    return net.to(DEVICE).train(training)


def run(net, inputs):
    """The fixture's batch through the network on DEVICE; the outputs back on the CPU."""
    def moved(x):
        return [moved(t) for t in x] if isinstance(x, list) else x.to(DEVICE) if torch.is_tensor(x) else x
    out = net(*(moved(inputs[k]) for k in ('text', 'audio', 'visual', 'qmask', 'lengths')))
    return {k: v.cpu() if torch.is_tensor(v) else v for k, v in out.items()}


def assert_close(got, expected, what):
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    err = (got.detach() - expected).abs().max().item() if got.numel() else 0.0
    assert err <= ATOL, f"{what}: max abs error {err:.3g} > {ATOL}"


def test_golden_folder_is_not_empty():
    assert MODEL_FIXTURES, f"no *.pt fixtures in {GOLDEN_DIR}"
    assert EDGE_CASES, f"no edges*.json cases in {GOLDEN_DIR}"


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('path', MODEL_FIXTURES, ids=lambda p: p.stem)
def test_eval_mode_matches_reference(path, backend):
    cfg, dims, fixture = load_fixture(path)
    inputs, expected = fixture['inputs'], fixture['outputs']
    net = build(cfg, dims, fixture['state_dict'], training=False, backend=backend)
    with torch.no_grad():
        out = run(net, inputs)
    assert_close(out['log_prob'], expected['eval_log_prob'], 'eval log-probabilities')
    assert_close(out['features_after'], expected['eval_features'], 'features after the graphs')
    assert torch.equal(out['spk_idx'], expected['spk_idx']), 'speaker indices'
    loss = M.make_loss(cfg['dataset'])(out['log_prob'], inputs['labels'])
    assert_close(loss, expected['eval_loss'], 'eval loss')
    if 'features_before' in expected:
        assert_close(out['features_before'], expected['features_before'], 'features before the graphs')
    else:
        assert out['features_before'] is None


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('path', MODEL_FIXTURES, ids=lambda p: p.stem)
def test_train_mode_matches_reference(path, backend):
    cfg, dims, fixture = load_fixture(path)
    inputs, expected = fixture['inputs'], fixture['outputs']
    net = build(dict(cfg, dropout=0.0), dims, fixture['state_dict'], training=True, backend=backend)
    out = run(net, inputs)
    loss = M.make_loss(cfg['dataset'])(out['log_prob'], inputs['labels'])
    loss.backward()
    assert_close(out['log_prob'], expected['train_log_prob'], 'train log-probabilities')
    assert_close(loss, expected['train_loss'], 'train loss')
    grads = {n: (p.grad.norm().item() if p.grad is not None else 0.0) for n, p in net.named_parameters()}
    assert set(expected['train_grad_norms']) <= set(grads), 'gradient of an unknown parameter'
    for name, got in grads.items():
        ref = expected['train_grad_norms'].get(name)
        if ref is None:
            assert got == 0.0, f"{name} receives a gradient ({got:.3g}) where the reference has none"
            continue
        tol = max(1e-4 * abs(ref.item()), 1e-6)
        assert abs(got - ref.item()) <= tol, f"gradient norm of {name}: {got:.6g} vs {ref.item():.6g}"
    state = {k: v.cpu() for k, v in net.state_dict().items()}
    for name, ref in expected['train_running_stats'].items():
        assert_close(state[name], ref, name)


@pytest.mark.parametrize('source,index,case', EDGE_CASES, ids=[f'{s}-{i}' for s, i, _ in EDGE_CASES])
def test_edge_multisets_match_reference(source, index, case):
    lengths = case['dia_len']
    T = max(lengths)
    valid = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    speakers = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, spk in enumerate(case['speakers']):
        speakers[b, :len(spk)] = torch.tensor(spk)
    cfg = SimpleNamespace(**case)
    for stage, name in (('ECG', 'ecgnn_edges'), ('EIG', 'eignn_edges')):
        blocks = graph.graph_blocks(cfg, stage)
        g = graph.stage_graph(stage, cfg, blocks, valid, speakers)
        assert graph.edge_list(g, blocks) == sorted(case[name]), f"{name} differ"
