"""The bidirectional GRU encoders' padded pass: nn.GRU's arithmetic, with less work.

The reference runs its stacked bidirectional GRUs over the padded batch, without packing: the reverse
direction of a short dialogue reads the padded tail first, and that is part of its numbers. This
computes the same outputs at the real utterances:
  - the first layer's input gates W_ih x + b_ih are computed once per distinct input row. Every padded
    position of a batch holds the same row (padding is zeros, and what runs before the GRU acts row by
    row with statistics shared by the batch: BatchNorm, LayerNorm, Linear), so it is computed once
    and read at every padded position (PaddedBatch.source);
  - the first layer's reverse direction runs the padding once per batch, not once per dialogue: it
    starts from zero at the last step and reads the same padded row at every padded position, so at a
    given step every dialogue still in its padding holds the same state. One extra row, the padding's
    chain, runs every step; a dialogue's real utterances start from the chain's state where its padding
    ends, and every padded position reads the chain's output at its step;
  - the last layer's forward direction runs over the real utterances only (a packed sequence): its
    outputs at padded positions are never read, and those at real positions do not depend on them;
  - a direction's recurrence is one autograd Function (GRURecurrence) that keeps per step only what
    its backward needs and computes the recurrent weights' gradient in one matrix product.
A forward-only GRU (train.py --causal) runs every layer over the packed real utterances (forward_gru): its
outputs there never read the padding after them.
The steps are nn.GRU's CPU cell, operation for operation: the outputs equal nn.GRU's to float rounding
(bit for bit on CPU, except the packed direction, whose matrix products have fewer rows), and the
gradients too.
"""

import torch
import torch.nn.functional as F


class PaddedBatch:
    """Index tensors of a time-major, zero-padded batch: T steps, B dialogues of these lengths; position p = t*B + b.

    rows     (N,)    positions of the real utterances, in dialogue order (utterances of dialogue 0, then 1, ...)
    distinct (R,)    positions whose rows are distinct: the real ones, then one padded position (if any)
    source   (T*B,)  for every position, the index into `distinct` of the row it holds
    packed   (N,)    positions of the real utterances step by step, the longest dialogues first (a packed
                     sequence), with batch_sizes[t] of them at step t
    unpack   (N,)    for every real utterance (dialogue order), its index in `packed`
    place    (T*B,)  for every position, its index in [real rows in dialogue order, padded positions] (see spread)
    chain    (N+T,)  the first layer's reverse direction with its padding shared: step by step, the padded row
                     (index N of `distinct`, the chain) then the real rows of the dialogues still running, the
                     longest first, as indices into `distinct`; chain_sizes[t] = 1 + batch_sizes[t] of them at step t
    chain_place (T*B,) for every position, its index in `chain` (a padded position: its step's chain row)
    """

    def __init__(self, lengths, T, device=None):
        B = len(lengths)
        self.T, self.B, self.lengths = T, B, list(lengths)
        rows = [t * B + b for b, n in enumerate(lengths) for t in range(n)]
        padded = [t * B + b for b, n in enumerate(lengths) for t in range(n, T)]
        distinct = rows + padded[:1]
        source = torch.full((T * B,), len(rows), dtype=torch.long)
        source[rows] = torch.arange(len(rows))
        place = torch.empty(T * B, dtype=torch.long)
        place[rows + padded] = torch.arange(T * B)
        self.n_padded = len(padded)
        longest_first = sorted(range(B), key=lambda b: -lengths[b])
        self.batch_sizes = [sum(n > t for n in lengths) for t in range(T)]
        packed = [t * B + b for t, size in enumerate(self.batch_sizes) for b in longest_first[:size]]
        row_of = {p: i for i, p in enumerate(rows)}
        unpack = torch.empty(len(rows), dtype=torch.long)
        unpack[torch.as_tensor([row_of[p] for p in packed], dtype=torch.long)] = torch.arange(len(rows))
        self.chain_sizes = [1 + size for size in self.batch_sizes]
        chain, chain_place, start = [], [0] * (T * B), 0
        for t, size in enumerate(self.batch_sizes):
            chain.append(len(rows))
            chain_place[t * B:(t + 1) * B] = [start] * B
            for k, b in enumerate(longest_first[:size], 1):
                chain.append(row_of[t * B + b])
                chain_place[t * B + b] = start + k
            start += 1 + size
        self.rows, self.distinct, self.source, self.packed, self.unpack, self.place, self.chain, self.chain_place = (
            torch.as_tensor(x, dtype=torch.long).to(device)
            for x in (rows, distinct, source, packed, unpack, place, chain, chain_place))

    def spread(self, x):
        """The rows of `distinct` (R, D) -> a row per position (T*B, D). The padded positions' row is expanded,
        so the backward sums their gradients with a reduction, deterministic on every device."""
        n = self.rows.numel()
        return torch.cat([x[:n], x[n:].expand(self.n_padded, -1)]).index_select(0, self.place)


class GRURecurrence(torch.autograd.Function):
    """The hidden states of one GRU direction, h_t = cell(gi_t, h_{t-1}) from h_0 = 0, over precomputed input gates.

    gi (n, 3H): the input gates W_ih x_t + b_ih of every step, step after step; step t has batch_sizes[t]
    rows (non-increasing: the sequences running at step t, always the first ones). reverse: the steps run
    from the last to the first; a sequence that starts at a later step (one of the rows added since the
    step before) starts from the state of the first row, not from zero (see PaddedBatch.chain). Returns
    the hidden states (n, H), laid out as gi.

    The step is aten's GRU cell, operation for operation:
        r, z = sigmoid(gh_rz + gi_rz), n = tanh(gi_n + gh_n * r), h_t = (h_{t-1} - n) * z + n
    with gh = W_hh h_{t-1} + b_hh. The backward multiplies by per-row factors computed for all steps at
    once, and takes the recurrent weights' gradient in one matrix product.
    """

    @staticmethod
    def forward(ctx, gi, w_hh, b_hh, batch_sizes, reverse):
        H = w_hh.shape[1]
        gh = gi.new_empty(gi.shape[0], 3 * H)                # W_hh h + b_hh: r, z, n
        rz = gi.new_empty(gi.shape[0], 2 * H)                # reset and update gates
        new = gi.new_empty(gi.shape[0], H)                   # the new gate n
        out = gi.new_empty(gi.shape[0], H)
        steps = list(zip(*[t.split(batch_sizes) for t in (gi[:, :2 * H], gi[:, 2 * H:], gh, gh[:, :2 * H],
                                                           gh[:, 2 * H:], rz, rz[:, :H], rz[:, H:], new, out)]))
        w_hh_t = w_hh.t()
        order = step_order(len(batch_sizes), reverse)
        h = gi.new_zeros(batch_sizes[order[0]], H)
        for t in order:
            gi_rz, gi_n, gh_t, gh_rz, gh_n, rz_t, r, z, n, h_t = steps[t]
            if h.shape[0] != batch_sizes[t]:
                h = carry_rows(h, batch_sizes[t])
            torch.addmm(b_hh, h, w_hh_t, out=gh_t)
            torch.add(gh_rz, gi_rz, out=rz_t).sigmoid_()
            torch.mul(gh_n, r, out=n).add_(gi_n).tanh_()               # gi_n + gh_n * r
            torch.sub(h, n, out=h_t).mul_(z).add_(n)
            h = h_t
        ctx.save_for_backward(w_hh, rz, new, gh[:, 2 * H:].clone(), out)     # W_hn h + b_hn, without r, z
        ctx.batch_sizes, ctx.reverse = batch_sizes, reverse
        return out

    @staticmethod
    def backward(ctx, grad_out):
        w_hh, rz, new, gh_n, out = ctx.saved_tensors
        batch_sizes, H = ctx.batch_sizes, w_hh.shape[1]
        order = step_order(len(batch_sizes), ctx.reverse)
        h_prev = previous_states(out, batch_sizes, order)   # (n, H) the hidden state each row's step starts from
        r, z = rz[:, :H], rz[:, H:]
        d_n = (1 - z) * (1 - new * new)                      # d pre_n / d h_t
        d_z = (h_prev - new) * (z * (1 - z))                 # d pre_z / d h_t
        d_r = gh_n * (r * (1 - r))                           # d pre_r / d pre_n
        d_gh = rz.new_empty(rz.shape[0], 3 * H)              # d (W_hh h + b_hh): r, z, n
        d_gi_n = torch.empty_like(new)                       # d pre_n
        steps = list(zip(*[t.split(batch_sizes) for t in (grad_out, z, r, d_n, d_z, d_r, d_gh, d_gh[:, :H],
                                                           d_gh[:, H:2 * H], d_gh[:, 2 * H:], d_gi_n)]))
        dh = None                                            # gradient of the hidden state a step gives
        for t in reversed(order):
            g, z_t, r_t, d_n_t, d_z_t, d_r_t, d_gh_t, d_pre_r, d_pre_z, d_gh_n, d_pre_n = steps[t]
            dh = accumulate_rows(g, dh)
            torch.mul(dh, d_n_t, out=d_pre_n)
            torch.mul(dh, d_z_t, out=d_pre_z)
            torch.mul(d_pre_n, d_r_t, out=d_pre_r)
            torch.mul(d_pre_n, r_t, out=d_gh_n)
            dh = torch.addmm(dh * z_t, d_gh_t, w_hh)
        d_w_hh, d_b_hh = d_gh.t() @ h_prev, d_gh.sum(0)
        d_gh[:, 2 * H:] = d_gi_n                            # d_gi: d pre_r, d pre_z as d_gh's, then d pre_n
        return d_gh, d_w_hh, d_b_hh, None, None


def step_order(T, reverse):
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def carry_rows(h, n):
    """The states (n, H) a step starts from, given the previous step's h (m, H): its first n rows (n <= m: the
    sequences still running), or all of them and the first row's for the n - m sequences starting now."""
    if n <= h.shape[0]:
        return h[:n]
    return torch.cat([h, h[:1].expand(n - h.shape[0], -1)])


def previous_states(out, batch_sizes, order):
    """(n, H): for every row, the hidden state its step started from (the previous step's, zeros at the first)."""
    parts = out.split(batch_sizes)
    before = dict(zip(order[1:], order))
    return torch.cat([carry_rows(parts[before[t]], b) if t in before else out.new_zeros(b, out.shape[1])
                      for t, b in enumerate(batch_sizes)])


def accumulate_rows(grad, carried):
    """grad (b, H) of a step's states plus the gradient carried back from the next step's starting states
    (the transpose of carry_rows: to the first rows, and a started sequence's to the first row)."""
    if carried is None:
        return grad
    b, m = grad.shape[0], carried.shape[0]
    if m == b:
        return grad + carried
    if m < b:
        total = grad.clone()
        total[:m] += carried
        return total
    total = grad + carried[:b]
    total[0] += carried[b:].sum(0)
    return total


def input_gates(x, index, w_ih, b_ih, positions=None):
    """W_ih x + b_ih at these positions (None: all), (n, 3H). x (R, I) holds the row of every position
    at `index` (None: x has one row per position): the product is taken over the fewer rows."""
    if index is None:
        return F.linear(x if positions is None else x.index_select(0, positions), w_ih, b_ih)
    return F.linear(x, w_ih, b_ih).index_select(0, index if positions is None else index.index_select(0, positions))


def bidirectional_gru(gru, x, index, batch):
    """The real utterances' outputs (N, 2H) of a bidirectional nn.GRU over the padded batch, in dialogue order.

    x (R, I) with index (T*B,): the row each position holds (index None: one row per position).
    Dropout between the layers, as nn.GRU's, draws from the same generator in the same order.
    """
    assert gru.bidirectional and not gru.batch_first, 'a time-major bidirectional GRU'
    T, B = batch.T, batch.B
    for layer in range(gru.num_layers):
        names = ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')
        params = [[getattr(gru, f'{name}_l{layer}{suffix}') for name in names] for suffix in ('', '_reverse')]
        (w_ih, w_hh, b_ih, b_hh), (w_ih_r, w_hh_r, b_ih_r, b_hh_r) = params
        last = layer == gru.num_layers - 1
        if index is not None and batch.n_padded:         # one padded row: the padding runs once (batch.chain)
            backward = GRURecurrence.apply(input_gates(x, batch.chain, w_ih_r, b_ih_r), w_hh_r, b_hh_r,
                                           batch.chain_sizes, True)                          # (N+T, H)
            backward = backward.index_select(0, batch.chain_place)                           # (T*B, H)
        else:
            backward = GRURecurrence.apply(input_gates(x, index, w_ih_r, b_ih_r), w_hh_r, b_hh_r, [B] * T, True)
        if last:
            forward = GRURecurrence.apply(input_gates(x, index, w_ih, b_ih, batch.packed), w_hh, b_hh,
                                          batch.batch_sizes, False)                      # (N, H) packed
            return torch.cat([forward.index_select(0, batch.unpack), backward.index_select(0, batch.rows)], -1)
        forward = GRURecurrence.apply(input_gates(x, index, w_ih, b_ih), w_hh, b_hh, [B] * T, False)
        x = torch.cat([forward, backward], -1)                                              # (T*B, 2H)
        x, index = F.dropout(x.view(T, B, -1), gru.dropout, gru.training).view(T * B, -1), None


def forward_gru(gru, x, index, batch):
    """The real utterances' outputs (N, H) of a forward-only nn.GRU (train.py --causal) over the padded batch, in
    dialogue order. A forward direction's outputs at real utterances never read the padding after them, so every
    layer runs over the packed sequence of real utterances only. x, index: as bidirectional_gru's. Dropout
    between the layers as nn.GRU's (its masks drawn in another order)."""
    assert not gru.bidirectional and not gru.batch_first, 'a time-major forward-only GRU'
    for layer in range(gru.num_layers):
        w_ih, w_hh, b_ih, b_hh = (getattr(gru, f'{name}_l{layer}')
                                  for name in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh'))
        gates = input_gates(x, index, w_ih, b_ih, batch.packed) if layer == 0 else F.linear(x, w_ih, b_ih)
        x = GRURecurrence.apply(gates, w_hh, b_hh, batch.batch_sizes, False)               # (N, H) packed
        if layer < gru.num_layers - 1:
            x = F.dropout(x, gru.dropout, gru.training)
    return x.index_select(0, batch.unpack)
