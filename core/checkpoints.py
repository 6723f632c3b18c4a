"""Checkpoints: reference-format state_dicts, saved atomically and loaded strictly, with a mismatch
report that names the flags that probably differ from the training run's."""
import os
import re
import warnings

import torch

import utils
from core import config

# Which flags probably differ when a checkpoint does not fit: (key pattern, kind of mismatch, flag, why).
# kind: 'presence' (missing or unexpected key), 'rows' / 'width' (shape[0] / another dimension differs).
CHECKPOINT_HINTS = [
    (r'graph_model\.directconv\d+\.', 'presence', '--num_L', 'number of EIGNN layers'),
    (r'graph_model\.conv\d+\.', 'presence', '--num_K', 'number of ECGNN layers'),
    (r'graph_model\.speaker_embeddings\.', 'rows', '--Dataset', 'number of speakers'),
    (r'(smax_fc|hidfc)\.', 'rows', '--Dataset', 'number of classes'),
    (r'smax_fc\.', 'width', '--graph_type / --multimodal_node', 'read-out width'),
    (r'(gru|lstm)_[av]\.', 'presence', '--av_using_lstm', 'recurrent audio / visual encoders'),
    (r'(gru|lstm)_', 'presence', '--base-model', 'GRU or LSTM'),
    (r'linear_[av]\.', 'presence', '--modals', 'modalities used'),
    (r'linear_u\.', 'width', '--modals', 'modalities fused'),
    (r'linear_[alv]\.', 'width', '--Dataset', 'feature sizes'),
    (r'.', 'rows', '--Dataset', 'hidden size D_g'),
]


def save_checkpoint(path, net):
    """The model's state_dict (reference key names), on the CPU, written atomically."""
    utils.save_state_dict(path, {k: v.detach().cpu() for k, v in net.state_dict().items()})


def shape_difference(expected, got):
    """'rows' when shape[0] differs, 'width' when another dimension does."""
    if len(expected) != len(got) or expected[0] != got[0]:
        return 'rows'
    return 'width'


def checkpoint_hints(problems):
    """'--flag (why, why)' for the flags that probably differ, from (key, kind) pairs of the mismatch."""
    reasons = {}
    for key, kind in problems:
        for pattern, applies_to, flag, why in CHECKPOINT_HINTS:
            if re.match(pattern, key) and applies_to == kind:
                reasons.setdefault(flag, [])
                if why not in reasons[flag]:
                    reasons[flag].append(why)
                break
    return [f"{flag} ({', '.join(whys)})" for flag, whys in reasons.items()]


def shorten(items, limit=8):
    items = list(items)
    return ', '.join(items[:limit]) + (f' and {len(items) - limit} more' if len(items) > limit else '')


def unreadable_reason(err):
    """Why torch.load failed, in one line (torch's own messages run over many lines)."""
    text = str(err)
    if 'Weights only load failed' in text:
        found = re.search(r'Unsupported global: GLOBAL (\S+)', text)
        return ("it holds more than tensors" + (f" (it refers to {found.group(1)})" if found else "")
                + "; a checkpoint is a plain state_dict, saved with torch.save(model.state_dict(), path)")
    first = text.strip().splitlines()[0].split('. ')[0] if text.strip() else ''
    return ("it is damaged (a partial download or copy?) or was not written by torch.save ("
            + type(err).__name__ + (f": {first[:200]}" if first and not isinstance(err, KeyError) else '') + ")")


def check_run_config(path, cfg):
    """A checkpoint in a training run's folder must be loaded into the model of that run's config.json, flags that
    leave the state_dict's shapes alone (--norm, --use_speaker, the windows, ...) included; --dropout and
    --graph-backend may differ."""
    run = utils.read_json(os.path.join(os.path.dirname(path), 'config.json'))
    recorded = run.get('model_config') if isinstance(run, dict) else None
    if not isinstance(recorded, dict):
        return                          # a released checkpoint, or one copied out of its run folder
    differ = config.model_differences(recorded, cfg)
    if differ:
        raise utils.UserError(
            f"the checkpoint {path} was trained with other settings than these flags give (its run folder's "
            "config.json): " + '; '.join(differ) + ". Give the flags of its training command (config.json's "
            "'command').")


def load_checkpoint(net, path, device):
    """Load a reference-format state_dict strictly; any mismatch is a UserError naming keys and flags."""
    if not os.path.isfile(path):
        raise utils.UserError(
            f"no checkpoint at {path}. Put the released checkpoint there (see the README's 'Data and released "
            f"checkpoints': ./best_model_<Dataset>.pth in the current directory), or pass --checkpoint PATH, e.g. the "
            f"best_model_<Dataset>.pth of a training run's folder.")
    try:
        with warnings.catch_warnings():         # torch warns about pickle protocols of non-torch files
            warnings.simplefilter('ignore')
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or non-state-dict file
        raise utils.UserError(f"{path} could not be read as a PyTorch state_dict: {unreadable_reason(err)}.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise utils.UserError(f"{path} is not a plain state_dict (a dict of tensors).")
    not_finite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if not_finite:
        raise utils.UserError(f"{path} holds NaN or infinite weights ({shorten(not_finite)}): the run that saved it "
                              "diverged; evaluate another checkpoint.")
    check_run_config(path, net.cfg)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        problems = ([(k, 'presence') for k in missing + unexpected]
                    + [(k, shape_difference(tuple(expected[k].shape), tuple(state[k].shape))) for k in wrong])
        parts = [f"missing keys: {shorten(missing)}" if missing else '',
                 f"unexpected keys: {shorten(unexpected)}" if unexpected else '',
                 "wrong shapes: " + shorten(f"{k} (checkpoint {list(state[k].shape)}, model "
                                            f"{list(expected[k].shape)})" for k in wrong) if wrong else '']
        hints = checkpoint_hints(problems) or ['the model flags of the command that trained it']
        raise utils.UserError(
            f"the checkpoint {path} does not match the model these flags build; "
            + '; '.join(part for part in parts if part)
            + f". Flags that probably differ from the training run: {', '.join(hints)}.")
    net.load_state_dict(state, strict=True)
