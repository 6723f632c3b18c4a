"""The MoED network: encoders, multimodal node, EIGNN + ECGNN, readout, losses.

State-dict keys follow the reference implementation so released checkpoints load strictly.
Batches are time-major and padded: (T, B, D).

The paper in the code (flags as train.py spells them; state_dict keys of MoED.state_dict()):

  paper            what                                  flags                        state_dict keys
  -----            ----                                  -----                        ---------------
  h^m              the multimodal node u = W[l; a; v]    --multimodal_node (graphs    linear_u
                                                         that have it)
  EIGNN            emotional inertia: same-speaker       --graph_type, --use_speaker  graph_model.fc1,
                   edges (graph.eignn_graph,             f-i                          graph_model.directconv{1..L}
                   graph.NormConv)
  L                EIGNN layers                          --num_L                      directconv1 .. directconvL
  epsilon_I        EIGNN residual scaling x0             --epsilon2                   (none)
  EIGNN windows    same-speaker past / future turns      --window_spk / --window_spk_f (none)
  ECGNN            emotional contagion: anyone's         --graph_type, --use_speaker  graph_model.fc2,
                   nearby turns (graph.ecgnn_graph,      b-e, --directed_edge,        graph_model.conv{1..K}.gate
                   graph.GatedConv, gate g)              --single_edge
  K                ECGNN layers                          --num_K                      conv1 .. convK
  epsilon_C        ECGNN residual scaling x0             --epsilon                    (none)
  ECGNN windows    past / future turns                   --window_dir / --window_dir_f (none)
  speaker, modal   embeddings added to the graph inputs  --use_speaker, --use_modal   graph_model.speaker_embeddings,
  embeddings                                                                          graph_model.modal_embeddings
  encoders         text norm + linear + RNN; a, v        --norm, --base-model,        normBN{a-d}, normLN{a-d},
                   linear (+ RNN)                        --av_using_lstm, --modals    linear_{a,v,l}, {gru,lstm}_{l,a,v}
  standardise      custom data: audio and visual features    (none: recorded in the      standardise_{a,v}.mean,
                   standardised with the training split's    run's ModelConfig)          standardise_{a,v}.std
                   statistics (Standardise)
  classifier       log_softmax of the readout            --graph_type,                smax_fc
                                                         --multimodal_node

Checkpoint-only keys (in the reference's checkpoints, never used by forward(); kept so that they load
strictly): hidfc, graph_model.directconv{l}.gate, linear_l where MELD's GRU reads the text directly,
and the norms --norm does not select (normLN* with BN, normBN* with LN, both with LN2 or none).
--graph-backend (dense or pyg) changes how the graphs run, not the state_dict.
"""
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import graph
from core import recurrent
from core.config import ModelConfig
from dataloader import IEMOCAP_CLASS_FREQ

MODAL_EMBEDDING_ROW = {'a': 0, 'v': 1, 'l': 2}
SPEAKER_LETTERS = {'ECG': {'b': 'l', 'c': 'a', 'd': 'v', 'e': 'u'},
                   'EIG': {'f': 'l', 'g': 'a', 'h': 'v', 'i': 'u'}}


class Stage(NamedTuple):
    """What differs between the two graphs: their layers' names, flags and convolution."""
    fc: str           # input layer
    conv: str         # convolution module prefix (conv1, conv2, ... or directconv1, ...)
    n_layers: str     # ModelConfig field: number of layers
    epsilon: str      # ModelConfig field: residual scaling
    conv_type: type   # graph.GatedConv (ECGNN) or graph.NormConv (EIGNN)


STAGES = {'ECG': Stage('fc2', 'conv', 'num_K', 'epsilon', graph.GatedConv),
          'EIG': Stage('fc1', 'directconv', 'num_L', 'epsilon2', graph.NormConv)}


def conv_types(backend):
    """The convolution classes of --graph-backend: {'ECG': ..., 'EIG': ...}; pyg (torch_geometric) is
    imported only when asked for."""
    if backend == 'pyg':
        from core import pyg_graph
        return pyg_graph.CONVS
    return {stage: layers.conv_type for stage, layers in STAGES.items()}


def run_graphs(cfg):
    """Which graphs must be computed."""
    return [g for g in ('ECG', 'EIG') if cfg.graph_type in ('both', g)]


def readout_parts(cfg):
    """(graph, block) pairs concatenated into the readout vector, the features after the graphs."""
    node, mods = cfg.multimodal_node, graph.used_modalities(cfg)
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
    """Embeddings, EIGNN (fc1 + NormConv layers) and ECGNN (fc2 + GatedConv layers)."""

    def __init__(self, cfg, D_g, h):
        super().__init__()
        self.cfg = cfg
        self.modal_embeddings = nn.Embedding(3, D_g)
        self.speaker_embeddings = nn.Embedding(cfg.n_speakers, D_g)
        self.fc1 = nn.Linear(D_g, h)
        self.fc2 = nn.Linear(D_g, h)
        convs = conv_types(cfg.graph_backend)
        for i in range(1, cfg.num_L + 1):
            self.add_module(f'directconv{i}', convs['EIG'](h))
        for i in range(1, cfg.num_K + 1):
            self.add_module(f'conv{i}', convs['ECG'](h))

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

    def convs(self, stage):
        """The layers of one graph, first to last."""
        layers = STAGES[stage]
        return [getattr(self, f'{layers.conv}{k}') for k in range(1, getattr(self.cfg, layers.n_layers) + 1)]

    def is_linear(self, stage):
        """Whether a graph's layers are all linear maps over its nodes (their class says so: `linear = True`,
        no gate and no weights), so that it can run in class space (forward's projections)."""
        return all(getattr(conv, 'linear', False) for conv in self.convs(stage))

    def run_stage(self, stage, x0, blocks, wanted, layout, spk):
        """The layers `x = conv_k(x) + epsilon * x0` of one graph over each group of the layout.

        x0: (nb, N, h) the graph's input rows after fc. Returns (k, N, h): the blocks blocks[wanted]
        after the last layer (which computes only those), rows in dialogue order.
        """
        layers, convs = STAGES[stage], self.convs(stage)
        epsilon, n_layers = getattr(self.cfg, layers.epsilon), len(convs)
        if self.cfg.graph_backend == 'pyg':
            from core import pyg_graph
            return pyg_graph.run_stage(stage, self.cfg, convs, epsilon, x0, blocks, layout.lengths, spk)[wanted]
        outputs = []
        for x, slots, valid in zip(layout.to_groups(x0), layout.slots, layout.valid):   # x: nb x (B_g, T_g, h)
            coef = layers.conv_type.coefficients(graph.stage_graph(stage, self.cfg, blocks, valid, spk[slots] * valid))
            residual = [epsilon * xi for xi in x]
            for k, conv in enumerate(convs, 1):
                x = conv(x, coef, residual, wanted if k == n_layers else slice(None))
            outputs.append(x if n_layers else x[wanted])
        return layout.to_rows(outputs)

    def forward(self, nodes, spk, lengths, projections=None):
        """nodes: block -> (N, D_g) rows of the real utterances in dialogue order; spk: (N,) speaker index.
        Returns graph -> block -> (N, h) for the blocks the readout reads, rows in dialogue order.

        Dialogues are independent in both graphs, so they run in groups of similar length
        (graph.GroupLayout): the same arithmetic with far less padding than the batch's.

        projections: (graph, block) -> W (C, h), for blocks wanted only as W x (the readout's share of the
        class scores, in training): those come back as W x, (N, C). A linear graph's (is_linear: EIGNN)
        are computed in class space: its layers are one linear map Q over its nodes, so
        W Q(fc(X)) = Q((W fc)(X)): fc composed with W, then the layers over C features per block of
        the readout, not h (the same numbers to float rounding, a fraction of the work).
        """
        inputs = self.stage_inputs(nodes, spk)
        layout = graph.GroupLayout(lengths, spk.device)
        parts = readout_parts(self.cfg)
        outputs = {}
        for stage in run_graphs(self.cfg):
            blocks = graph.graph_blocks(self.cfg, stage)
            read = [blocks.index(b) for g, b in parts if g == stage]
            wanted = slice(min(read), max(read) + 1)                  # the span of blocks the readout reads
            fc, x0 = getattr(self, STAGES[stage].fc), torch.stack([inputs[stage][b] for b in blocks])
            projected = {b: w for (g, b), w in (projections or {}).items() if g == stage}
            if projected and self.is_linear(stage):
                w = torch.cat(list(projected.values()))                # (k*C, h), one W per block read
                rows = self.run_stage(stage, F.linear(x0, w @ fc.weight, w @ fc.bias), blocks, wanted, layout, spk)
                C = len(w) // len(projected)
                outputs[stage] = {b: rows[blocks[wanted].index(b), :, k * C:(k + 1) * C]
                                  for k, b in enumerate(projected)}
                continue
            rows = dict(zip(blocks[wanted], self.run_stage(stage, fc(x0), blocks, wanted, layout, spk)))
            outputs[stage] = {b: x @ projected[b].t() if b in projected else x for b, x in rows.items()}
        return outputs


class Standardise(nn.Module):
    """Per-dimension standardisation with fixed statistics, bounded: y = clamp((x - mean) / std, -LIMIT, LIMIT).

    x: (..., D) -> (..., D). The bound keeps a value far outside what training saw (a dimension nearly constant on
    the training recordings that a new recording, or the same one cut differently, moves by many of its standard
    deviations) from dominating the layer that reads it. mean and std (D,) are buffers, set once from the training
    split's features (set_statistics, by training.build_model) and saved in the state_dict with the weights, so
    every evaluation of a checkpoint (--testing, predict.py, serve.py) applies what training applied. A constant
    dimension (std 0) keeps a std of 1: it becomes 0.
    """

    LIMIT = 3.0

    def __init__(self, dim):
        super().__init__()
        self.register_buffer('mean', torch.zeros(dim))
        self.register_buffer('std', torch.ones(dim))

    def set_statistics(self, rows):
        """mean and std of rows (n, D), computed in float64."""
        rows = torch.as_tensor(rows, dtype=torch.float64)
        std = rows.std(0, correction=0)
        self.mean.copy_(rows.mean(0))
        self.std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x):
        return ((x - self.mean) / self.std).clamp(-self.LIMIT, self.LIMIT)


class MoED(nn.Module):
    """The whole network, built from a ModelConfig (flags and feature sizes)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D_g, h = cfg.D_g, cfg.graph_h
        self.modals = graph.used_modalities(cfg)
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
                # --causal: forward only, with the width of both directions (D_g): the same outputs' size
                hidden = D_g if cfg.causal else D_g // 2
                self.add_module(f'{self.rnn}_{m}', rnn_cls(D_g, hidden, num_layers=2, bidirectional=not cfg.causal,
                                                         dropout=cfg.dropout))
        for m in cfg.standardised:                # buffers only: the seeded initialisation is unchanged
            self.add_module(f'standardise_{m}', Standardise(in_dims[m]))
        self.linear_u = nn.Linear(D_g * len(self.modals), D_g)
        self.graph_model = GraphModel(cfg, D_g, h)
        self.hidfc = nn.Linear(h, cfg.n_classes)                        # checkpoint-only: never used (see top)
        self.smax_fc = nn.Linear(h * len(readout_parts(cfg)), cfg.n_classes)

    def padding_free(self):
        """Whether this pass is batch-invariant: an evaluation of a custom run (ModelConfig.padding_free_eval),
        where every dialogue's outputs are those it has alone in its batch (see run_recurrent)."""
        return self.cfg.padding_free_eval and not self.training

    def norm_text(self, x, s, lengths):
        """--norm of one RoBERTa input: BN over all T*B rows (padding included), LN per row,
        LN2 over each dialogue's whole padded (T, D) block (its real rows only in a padding-free pass),
        anything else none."""
        kind = self.cfg.norm
        if kind == 'BN':
            T, B, D = x.shape
            return getattr(self, f'normBN{s}')(x.reshape(T * B, D)).reshape(T, B, D)
        if kind == 'LN':
            return getattr(self, f'normLN{s}')(x)
        if kind == 'LN2' and self.padding_free():
            out = torch.zeros_like(x)
            for b, n in enumerate(lengths):
                out[:n, b] = F.layer_norm(x[:n, b], (n, x.shape[2]))
            return out
        if kind == 'LN2':
            return F.layer_norm(x.transpose(0, 1), (x.shape[0], x.shape[2])).transpose(0, 1)
        return x

    def encode_text(self, text, batch):
        """Normalise the four RoBERTa inputs, average them, then linear_l (not MELD/GRU) and the RNN over the
        padded batch: the real utterances' outputs (N, D_g). Also returns the second input after its norm
        (for the features before the graphs), (T, B, D_text)."""
        normed = [self.norm_text(r, s, batch.lengths) for r, s in zip(text, 'abcd')]
        x = normed[0] + normed[1]                      # (r1 + r2 + r3 + r4) / 4, summed in place
        x += normed[2]
        x += normed[3]
        x /= 4
        x, index = x.flatten(0, 1), None               # (T*B, D_text), a row per position
        if self.cfg.norm != 'LN2':                     # padded positions hold one row: keep it once
            x, index = x.index_select(0, batch.distinct), batch.source
        if not self.cfg.text_skips_linear:
            x = self.linear_l(x)
        return self.run_recurrent(self.rnn + '_l', x, index, batch), normed[1]

    def encode(self, m, x, batch):
        """Audio / visual encoder of the real utterances, (N, D_g): linear, then the RNN with --av_using_lstm
        (over the padded batch, as the text's)."""
        linear = getattr(self, f'linear_{m}')
        if not self.cfg.av_using_lstm:
            return linear(real_rows(x, batch.rows))
        return self.run_recurrent(f'{self.rnn}_{m}', linear(x.flatten(0, 1).index_select(0, batch.distinct)),
                                  batch.source, batch)

    def run_recurrent(self, name, x, index, batch):
        """The recurrent encoder `name` over the padded batch whose rows x (R, D) sit at `index` (None: one row
        per position): the real utterances' outputs (N, D_g), in dialogue order.

        A GRU on the CPU runs as recurrent.bidirectional_gru, or recurrent.forward_gru for a forward-only one
        (--causal: its outputs at real utterances never read the padding after them): the same arithmetic, less
        work; elsewhere (an LSTM, or CUDA, where cuDNN's fused kernel beats stepping from Python) the module
        itself runs. In a padding-free pass (custom runs' evaluations) a bidirectional encoder runs over the
        packed dialogues: each reverse direction starts from zero at the dialogue's own last utterance, as when
        the dialogue is the longest of its batch, instead of reading the batch's padding first (the paper's
        datasets keep that padded pass, which the reference's numbers contain)."""
        rnn = getattr(self, name)
        padding_free = rnn.bidirectional and self.padding_free()
        if self.rnn == 'gru' and x.device.type == 'cpu' and not rnn.bidirectional:
            return recurrent.forward_gru(rnn, x, index, batch)
        if self.rnn == 'gru' and x.device.type == 'cpu' and not padding_free:
            return recurrent.bidirectional_gru(rnn, x, index, batch)
        if index is not None:
            x = batch.spread(x)
        x = x.view(batch.T, batch.B, -1)
        if not padding_free:
            return real_rows(rnn(x)[0], batch.rows)
        lengths = torch.as_tensor(batch.lengths, dtype=torch.long)
        packed = rnn(nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False))[0]
        return real_rows(nn.utils.rnn.pad_packed_sequence(packed, total_length=batch.T)[0], batch.rows)

    def forward(self, text, audio, visual, qmask, lengths):
        """One padded, time-major batch (zeros at padded positions, as dataloader.make_batch pads):
        text four (T, B, D_text), audio (T, B, D_audio), visual (T, B, D_visual), qmask (T, B, n_speakers).
        Returns log_prob (N, C), features_after (N, readout size; None in training mode, where EIGNN's
        share of the scores runs in class space: GraphModel.forward), features_before, spk_idx."""
        T = qmask.shape[0]
        batch = recurrent.PaddedBatch([int(n) for n in lengths], T, qmask.device)
        raw = {'a': audio, 'v': visual}
        if self.cfg.standardised:                     # padded positions stay zero, as make_batch pads them
            real = torch.arange(T, device=qmask.device)[:, None] < torch.as_tensor(lengths, device=qmask.device)
            for m in self.cfg.standardised:
                raw[m] = getattr(self, f'standardise_{m}')(raw[m]) * real[..., None]
        nodes, r2 = {}, None                                                          # block -> (N, D_g)
        for m in self.modals:
            if m == 'l':
                nodes['l'], r2 = self.encode_text(text, batch)
            else:
                nodes[m] = self.encode(m, raw[m], batch)
        nodes['u'] = self.linear_u(torch.cat([nodes[m] for m in self.modals], -1))
        spk = real_rows(qmask.argmax(-1), batch.rows)                                 # (N,)
        parts = readout_parts(self.cfg)
        if self.training:           # only the class scores are needed: EIGNN's share computed in class space
            weights = dict(zip(parts, self.smax_fc.weight.split(self.cfg.graph_h, 1)))
            outputs = self.graph_model(nodes, spk, batch.lengths, projections=weights)
            scores, features = self.smax_fc.bias, None
            for g, b in parts:
                scores = scores + outputs[g][b]
        else:
            outputs = self.graph_model(nodes, spk, batch.lengths)
            features = torch.cat([outputs[g][b] for g, b in parts], -1)
            scores = self.smax_fc(features)
        before = None
        if len(self.modals) == 3 and not self.training:    # exported by --testing only
            before = real_rows(torch.cat([r2, raw['a'], raw['v']], -1), batch.rows)
        return {'log_prob': F.log_softmax(scores, -1),
                'features_after': features,
                'features_before': before,
                'spk_idx': spk}


def real_rows(x, rows):
    """The real utterances of a time-major padded (T, B, ...) tensor: (N, ...), in dialogue order."""
    return x.flatten(0, 1).index_select(0, rows)


def focal_loss(log_prob, labels, gamma=2.5):
    """The reference focal loss: mean over all N*C entries of -(1 - Y*P)^gamma * P."""
    onehot = F.one_hot(labels, log_prob.shape[-1]).to(log_prob.dtype)
    return (-(1 - onehot * log_prob) ** gamma * log_prob).mean()


def make_loss(dataset, device=None, class_weight=None):
    """The training loss of a dataset: IEMOCAP class-weighted NLL, MELD the focal loss, MOSEI plain NLL;
    custom data: NLL, weighted per class by class_weight if given."""
    if dataset == 'IEMOCAP':
        weight = 1 / torch.tensor(IEMOCAP_CLASS_FREQ, device=device)
        return lambda log_prob, labels: F.nll_loss(log_prob, labels, weight=weight)
    if dataset == 'MELD':
        return focal_loss
    if class_weight is not None:
        weight = torch.as_tensor(class_weight, dtype=torch.float32, device=device)
        return lambda log_prob, labels: F.nll_loss(log_prob, labels, weight=weight)
    return F.nll_loss
