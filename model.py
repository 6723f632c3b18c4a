"""The MoED network (SPEC section 2): encoders, multimodal node, EIGNN + ECGNN, readout, losses.

State-dict keys follow the reference implementation so released checkpoints load strictly.
Batches are time-major and padded: (T, B, D).
"""
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import graph
from config import ModelConfig

MODALITIES = 'lav'                       # canonical order of modality blocks and of cat(l, a, v)
MODAL_EMBEDDING_ROW = {'a': 0, 'v': 1, 'l': 2}
SPEAKER_LETTERS = {'ECG': {'b': 'l', 'c': 'a', 'd': 'v', 'e': 'u'},
                   'EIG': {'f': 'l', 'g': 'a', 'h': 'v', 'i': 'u'}}
IEMOCAP_CLASS_FREQ = [0.086747, 0.144406, 0.227883, 0.160585, 0.127711, 0.252668]


class Stage(NamedTuple):
    """What differs between the two graphs: their layers' names and flags, and the degree they normalise by."""
    fc: str           # input layer
    conv: str         # convolution module prefix (conv1, conv2, ... or directconv1, ...)
    n_layers: str     # ModelConfig field: number of layers
    epsilon: str      # ModelConfig field: residual scaling
    degree: str       # 'out' (ECGNN) or 'in' (EIGNN)


STAGES = {'ECG': Stage('fc2', 'conv', 'num_K', 'epsilon', 'out'),
          'EIG': Stage('fc1', 'directconv', 'num_L', 'epsilon2', 'in')}


def used_modalities(cfg):
    """Modalities of --modals in canonical l, a, v order."""
    return [m for m in MODALITIES if m in cfg.modals]


def graph_blocks(cfg, stage):
    """Node blocks of one graph ('ECG' or 'EIG'): the modalities, plus u where it belongs."""
    has_u = cfg.multimodal_node in ('both', stage)
    return used_modalities(cfg) + (['u'] if has_u else [])


def run_graphs(cfg):
    """Which graphs must be computed."""
    return [g for g in ('ECG', 'EIG') if cfg.graph_type in ('both', g)]


def readout_parts(cfg):
    """(graph, block) pairs concatenated into the readout vector (SPEC 2.8)."""
    node, mods = cfg.multimodal_node, used_modalities(cfg)
    if cfg.graph_type != 'both':
        return [(cfg.graph_type, 'u')]
    if node == 'both':
        return [('EIG', 'u'), ('ECG', 'u')]
    if node == 'ECG':
        return [('EIG', m) for m in mods] + [('ECG', 'u')]
    if node == 'EIG':
        return [('ECG', m) for m in mods] + [('EIG', 'u')]
    return [('EIG', m) for m in mods] + [('ECG', m) for m in mods]


class GraphModel(nn.Module):
    """Embeddings, EIGNN (fc1 + DirectConv layers) and ECGNN (fc2 + MultiConv layers)."""

    def __init__(self, cfg, D_g, h):
        super().__init__()
        self.cfg = cfg
        self.modal_embeddings = nn.Embedding(3, D_g)
        self.speaker_embeddings = nn.Embedding(cfg.n_speakers, D_g)
        self.fc1 = nn.Linear(D_g, h)
        self.fc2 = nn.Linear(D_g, h)
        for i in range(1, cfg.num_L + 1):
            self.add_module(f'directconv{i}', graph.DirectConv(h))
        for i in range(1, cfg.num_K + 1):
            self.add_module(f'conv{i}', graph.MultiConv(h))

    def stage_inputs(self, nodes, spk):
        """Add modal and speaker embeddings; ECGNN additions stay in the EIGNN inputs (cumulative)."""
        cfg, inputs = self.cfg, {}
        if cfg.use_modal:
            nodes = {m: x + self.modal_embeddings.weight[MODAL_EMBEDDING_ROW[m]] if m in MODAL_EMBEDDING_ROW else x
                     for m, x in nodes.items()}
        speaker = self.speaker_embeddings(spk)
        for stage in ('ECG', 'EIG'):
            targets = {SPEAKER_LETTERS[stage][c] for c in cfg.use_speaker if c in SPEAKER_LETTERS[stage]}
            nodes = {m: x + speaker if m in targets else x for m, x in nodes.items()}
            inputs[stage] = nodes
        return inputs

    def stage_graph(self, stage, blocks, valid, speakers):
        """Edges of one graph for a padded group of dialogues."""
        cfg = self.cfg
        if stage == 'ECG':
            return graph.ecgnn_graph(blocks, valid, cfg.window_dir, cfg.window_dir_f,
                                     cfg.single_edge, cfg.directed_edge)
        return graph.eignn_graph(blocks, speakers, valid, cfg.window_spk, cfg.window_spk_f,
                                 cfg.single_edge, cfg.directed_edge)

    def run_stage(self, stage, nodes, blocks, valid, speakers):
        """fc, then the layers `x = conv_k(x) + epsilon * x0` of one graph; (B, nb, T, h)."""
        layers = STAGES[stage]
        norm = self.stage_graph(stage, blocks, valid, speakers).normalised(by=layers.degree)
        x = getattr(self, layers.fc)(graph.to_block_nodes([nodes[b] for b in blocks]))
        residual = getattr(self.cfg, layers.epsilon) * x
        for k in range(1, getattr(self.cfg, layers.n_layers) + 1):
            x = getattr(self, f'{layers.conv}{k}')(x, norm).add_(residual)
        return x

    def forward(self, nodes, spk, lengths):
        """nodes: block -> (T, B, D_g); spk: (T, B). Returns graph -> block -> (N, h), dialogue order.

        Dialogues are independent in both graphs, so they run in groups of similar length
        (graph.length_groups): the same arithmetic with far less padding than the batch's.
        """
        inputs = self.stage_inputs(nodes, spk)
        groups = graph.length_groups(lengths)
        rows = {stage: {b: [] for b in graph_blocks(self.cfg, stage)} for stage in run_graphs(self.cfg)}
        for group, T in groups:
            index = torch.as_tensor(group, device=spk.device)
            valid = graph.padding_mask([lengths[b] for b in group], T, spk.device)
            speakers = spk[:T, index].t() * valid
            for stage, per_block in rows.items():
                blocks = list(per_block)
                x = self.run_stage(stage, {b: inputs[stage][b][:T, index] for b in blocks}, blocks, valid, speakers)
                for b, block_rows in zip(blocks, graph.from_block_nodes(x, valid)):
                    per_block[b].append(block_rows)
        order = graph.dialogue_order(lengths, [group for group, _ in groups]).to(spk.device)
        return {stage: {b: torch.cat(parts)[order] for b, parts in per_block.items()}
                for stage, per_block in rows.items()}


class MoED(nn.Module):
    """The whole network, built from a ModelConfig (flags and feature sizes)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D_g, h = cfg.D_g, cfg.graph_h
        self.modals = used_modalities(cfg)
        self.rnn = 'gru' if cfg.base_model == 'GRU' else 'lstm'
        for s in 'abcd':
            self.add_module(f'normBN{s}', nn.BatchNorm1d(cfg.D_text))
        for s in 'abcd':
            self.add_module(f'normLN{s}', nn.LayerNorm(cfg.D_text))
        in_dims = {'a': cfg.D_audio, 'v': cfg.D_visual, 'l': cfg.D_text}
        for m in 'avl':                       # reference registration order
            if m not in self.modals:
                continue
            self.add_module(f'linear_{m}', nn.Linear(in_dims[m], D_g))
            if m == 'l' or cfg.av_using_lstm:
                rnn_cls = nn.GRU if self.rnn == 'gru' else nn.LSTM
                self.add_module(f'{self.rnn}_{m}', rnn_cls(D_g, D_g // 2, num_layers=2, bidirectional=True,
                                                         dropout=cfg.dropout))
        self.linear_u = nn.Linear(D_g * len(self.modals), D_g)
        self.graph_model = GraphModel(cfg, D_g, h)
        self.hidfc = nn.Linear(h, cfg.n_classes)
        self.smax_fc = nn.Linear(h * len(readout_parts(cfg)), cfg.n_classes)

    def norm_text(self, x, s):
        """--norm of one RoBERTa input: BN over all T*B rows (padding included), LN per row,
        LN2 over each dialogue's whole padded (T, D) block, anything else none."""
        kind = self.cfg.norm
        if kind == 'BN':
            T, B, D = x.shape
            return getattr(self, f'normBN{s}')(x.reshape(T * B, D)).reshape(T, B, D)
        if kind == 'LN':
            return getattr(self, f'normLN{s}')(x)
        if kind == 'LN2':
            return F.layer_norm(x.transpose(0, 1), (x.shape[0], x.shape[2])).transpose(0, 1)
        return x

    def encode_text(self, text):
        """Normalise the four RoBERTa inputs, average them, then linear_l (not MELD/GRU) and the RNN."""
        normed = [self.norm_text(r, s) for r, s in zip(text, 'abcd')]
        x = sum(normed) / 4
        if not self.cfg.text_skips_linear:
            x = self.linear_l(x)
        return getattr(self, f'{self.rnn}_l')(x)[0], normed[1]

    def encode(self, m, x):
        """Audio / visual encoder: linear, then the RNN with --av_using_lstm."""
        x = getattr(self, f'linear_{m}')(x)
        rnn = getattr(self, f'{self.rnn}_{m}', None)
        return rnn(x)[0] if rnn is not None else x

    def forward(self, text, audio, visual, qmask, lengths):
        T = qmask.shape[0]
        lengths = [int(n) for n in lengths]
        valid = graph.padding_mask(lengths, T, qmask.device)                          # (B, T)
        raw = {'a': audio, 'v': visual}
        nodes, r2 = {}, None
        for m in self.modals:
            if m == 'l':
                nodes['l'], r2 = self.encode_text(text)
            else:
                nodes[m] = self.encode(m, raw[m])
        nodes['u'] = self.linear_u(torch.cat([nodes[m] for m in self.modals], -1))
        spk = qmask.argmax(-1)                                                        # (T, B)
        outputs = self.graph_model(nodes, spk, lengths)
        features = torch.cat([outputs[g][b] for g, b in readout_parts(self.cfg)], -1)
        before = None
        if len(self.modals) == 3 and not self.training:    # exported by --testing only
            before = torch.cat([r2, audio, visual], -1).transpose(0, 1)[valid]
        return {'log_prob': F.log_softmax(self.smax_fc(features), -1),
                'features_after': features,
                'features_before': before,
                'spk_idx': spk.t()[valid]}


def focal_loss(log_prob, labels, gamma=2.5):
    """The reference focal loss: mean over all N*C entries of -(1 - Y*P)^gamma * P."""
    onehot = F.one_hot(labels, log_prob.shape[-1]).to(log_prob.dtype)
    return (-(1 - onehot * log_prob) ** gamma * log_prob).mean()


def make_loss(dataset, device=None, class_weight=None):
    """The training loss of a dataset (SPEC 2.9); custom data: NLL, weighted per class by class_weight if given."""
    if dataset == 'IEMOCAP':
        weight = 1 / torch.tensor(IEMOCAP_CLASS_FREQ, device=device)
        return lambda log_prob, labels: F.nll_loss(log_prob, labels, weight=weight)
    if dataset == 'MELD':
        return focal_loss
    if class_weight is not None:
        weight = torch.as_tensor(class_weight, dtype=torch.float32, device=device)
        return lambda log_prob, labels: F.nll_loss(log_prob, labels, weight=weight)
    return F.nll_loss
