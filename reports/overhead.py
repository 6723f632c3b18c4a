"""--overhead: FLOPs, trainable parameters, memory and latency of one forward pass over a dialogue.

FLOPs are multiply-adds: fvcore counts the matrix products and normalisations, thop's rules the
GRU / LSTM encoders (which fvcore skips); elementwise and indexing ops are not counted.

(bench.py --roofline counts a whole training epoch instead: bench.training_flops.)
"""
import logging
import math
import statistics
import time
import warnings

import torch

from utils import synchronize

OVERHEAD_UTTERANCES = 40                                         # dialogue length timed by --overhead


class LogProbOnly(torch.nn.Module):
    """Tensor-in, tensor-out view of MoED for one dialogue of fixed length (what fvcore can trace)."""

    def __init__(self, net, length):
        super().__init__()
        self.net, self.length = net, length

    def forward(self, t1, t2, t3, t4, audio, visual, qmask):
        return self.net([t1, t2, t3, t4], audio, visual, qmask, [self.length])['log_prob']


def dialogue_inputs(fs, n, device):
    """A random n-utterance dialogue of the dataset's shape, speakers taking turns, as (T, 1, D) tensors."""
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(n, 1, fs.dims[d], generator=gen) for d in ['D_text'] * 4 + ['D_audio', 'D_visual']]
    qmask = torch.nn.functional.one_hot(torch.arange(n) % fs.n_speakers, fs.n_speakers).float()[:, None, :]
    return tuple(t.to(device) for t in feats + [qmask])


def matmul_flops(inputs, outputs):
    """fvcore's count for aten::matmul (output elements x inner size), also when an operand is a vector."""
    from fvcore.nn.jit_handles import get_shape
    return math.prod(get_shape(outputs[0])) * get_shape(inputs[0])[-1]


def recurrent_flops(net, n):
    """Multiply-adds of the GRU / LSTM encoders over an n-utterance dialogue, by thop's counting rules.

    fvcore skips recurrent layers, and the model runs its GRUs through core/recurrent.py rather than their
    forward(), so each module's rule is applied to the (n, 1, input size) input it reads."""
    from thop.rnn_hooks import count_gru, count_lstm
    rules = {torch.nn.GRU: count_gru, torch.nn.LSTM: count_lstm}
    total = 0.0
    for module in net.modules():
        if type(module) in rules:
            module.total_ops = torch.zeros(1, dtype=torch.float64)
            rules[type(module)](module, (torch.empty(n, 1, module.input_size),), None)
            total += module.total_ops.item()
            del module.total_ops
    return total


def overhead_text(net, fs, device, warmup=5, repeats=30):
    """FLOPs (fvcore + thop), trainable parameters, memory and median latency of one 40-utterance forward pass."""
    import psutil
    from fvcore.nn import FlopCountAnalysis
    n = OVERHEAD_UTTERANCES
    wrapped, inputs = LogProbOnly(net, n).eval(), dialogue_inputs(fs, n, device)
    process = psutil.Process()
    with torch.no_grad():
        if str(device).startswith('cuda'):
            torch.cuda.reset_peak_memory_stats()
            wrapped(*inputs)
            synchronize(device)
            memory = f"CUDA max allocated {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB (weights included)"
        else:
            rss = process.memory_info().rss
            wrapped(*inputs)
            memory = f"RSS growth over the first forward pass {(process.memory_info().rss - rss) / 2**20:.1f} MiB"
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            logging.getLogger('fvcore').setLevel(logging.ERROR)
            flops = FlopCountAnalysis(wrapped, inputs).set_op_handle('aten::matmul', matmul_flops) \
                .unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
            graph_and_linear = flops.total()
            recurrent = recurrent_flops(net, n)
        for _ in range(warmup):
            wrapped(*inputs)
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            wrapped(*inputs)
            synchronize(device)
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return '\n'.join([
        f"overhead of one forward pass over a {n}-utterance dialogue (random features, device {device}):",
        f"  FLOPs: {(graph_and_linear + recurrent) / 1e9:.3f} G (one multiply-add = 1 FLOP): "
        f"{graph_and_linear / 1e9:.3f} G in matrix products and normalisations (fvcore) + {recurrent / 1e9:.3f} G "
        f"in the recurrent encoders (thop); elementwise and indexing ops are not counted",
        f"  trainable parameters: {params:,} ({params / 1e6:.2f} M)",
        f"  memory: {memory}",
        f"  latency: median {statistics.median(times) * 1e3:.2f} ms over {repeats} runs after {warmup} warm-up runs",
    ])
